"""sparsejit.MaskSchedule (python/sparsejit) over the C API's schedule: DFSAttn's defaults step
by step, a threshold schedule, and bad schedules named at construction. Needs neither PyTorch
nor a GPU."""
import unittest

import sparsejit


class MaskScheduleTest(unittest.TestCase):
    def test_the_defaults_are_the_dfsattn_codes(self):
        schedule = sparsejit.MaskSchedule()
        self.assertEqual((schedule.steps, schedule.dense_steps, schedule.refresh_interval, schedule.densities,
                          schedule.dense_layers), (50, 12, 12, (0.3, 0.2, 0.1), (0,)))
        dense = sparsejit.MaskDecision("dense", -1, 0.0, 0.0)
        for step in range(50):
            self.assertEqual(schedule.decide(step, 0), dense, f"layer 0 is dense at step {step}")
        self.assertEqual([schedule.decide(step, 1) for step in (0, 11, 12, 13, 23, 24, 36, 48, 49)],
                         [dense, dense, ("refresh", 0, 0.3, 0.0), ("reuse", 0, 0.3, 0.0), ("reuse", 0, 0.3, 0.0),
                          ("refresh", 1, 0.2, 0.0), ("refresh", 2, 0.1, 0.0), ("refresh", 3, 0.1, 0.0),
                          ("reuse", 3, 0.1, 0.0)])

    def test_a_threshold_schedule(self):
        schedule = sparsejit.MaskSchedule(steps=10, dense_steps=2, refresh_interval=4, thresholds=(0.9, 0.8),
                                          dense_layers=())  # thresholds take the default densities' place
        self.assertEqual(schedule.densities, ())
        self.assertEqual([schedule.decide(step, 0) for step in (1, 2, 5, 6, 9)],
                         [("dense", -1, 0.0, 0.0), ("refresh", 0, 0.0, 0.9), ("reuse", 0, 0.0, 0.9),
                          ("refresh", 1, 0.0, 0.8), ("reuse", 1, 0.0, 0.8)])

    def test_bad_schedules_and_steps_are_named(self):
        for arguments, words in (({"densities": (0.3, 1.5)}, "densities[1]"),
                                 ({"densities": (0.3,), "thresholds": (0.9,)}, "both given"),
                                 ({"refresh_interval": 0}, "refresh_interval"),
                                 ({"dense_layers": (2, 2)}, "twice")):
            with self.subTest(arguments=arguments), self.assertRaises(sparsejit.SparsejitError) as raised:
                sparsejit.MaskSchedule(**arguments)
            self.assertEqual(raised.exception.status, "SPARSEJIT_ERROR_INVALID_ARGUMENT")
            self.assertIn(words, str(raised.exception))
        with self.assertRaisesRegex(sparsejit.SparsejitError, "50"):
            sparsejit.MaskSchedule().decide(50, 1)
        for arguments in ({"steps": 2**32 + 50}, {"dense_layers": (2**31,)}):
            with self.subTest(arguments=arguments), self.assertRaisesRegex(ValueError, "no 32-bit integer"):
                sparsejit.MaskSchedule(**arguments)
        with self.assertRaisesRegex(ValueError, "step = 4294967320 is no 32-bit integer"):
            sparsejit.MaskSchedule().decide(2**32 + 24, 1)

    def test_a_schedule_is_read_only(self):
        schedule = sparsejit.MaskSchedule()
        with self.assertRaises(AttributeError):
            schedule.densities = (0.9,)  # it would not reach the C schedule made at construction


if __name__ == "__main__":
    unittest.main()
