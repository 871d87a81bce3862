"""tools/ab_attention.py against fake sparsejit CLIs (no GPU): the order the CLIs run in, each
CLI's own copy of the database, the per-round table and the medians' ratios, a failing run, and
the arguments it refuses."""
import json
import os
import stat
import subprocess
import sys
import tempfile
import textwrap
import unittest

TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "ab_attention.py")

# A stand-in for `sparsejit [--db DB] bench attention ... --json`: logs its call (its name, the
# database's path and contents, the bench arguments) to $FAKE_LOG, prints a log line and then the
# JSON report with a TFLOP/s that depends on the CLI (TFLOPS) and the density, or fails (FAIL).
FAKE = textwrap.dedent("""\
    #!{python}
    import json, os, sys
    TFLOPS, CONFIG, FAIL = {tflops}, {config!r}, {fail}
    argv = sys.argv[1:]
    db = None
    if argv[:1] == ["--db"]:
        db, argv = argv[1], argv[2:]
    assert argv[:2] == ["bench", "attention"] and argv[-1] == "--json", argv
    options = dict(zip(argv[2::2], argv[3::2]))
    contents = open(db).read() if db and os.path.exists(db) else None
    with open(os.environ["FAKE_LOG"], "a") as log:
        log.write(json.dumps({{"cli": os.path.basename(sys.argv[0]), "db": db, "db_contents": contents,
                               "argv": argv}}) + "\\n")
    if FAIL:
        sys.exit("fake: the kernel failed")
    density = float(options["--density"])
    print("a log line before the report")
    print(json.dumps({{"effective_tflops": TFLOPS * (1.0 if density == 1.0 else 0.9), "median_ms": 1.5,
                      "config": CONFIG}}))
    """)


class AbAttentionTest(unittest.TestCase):
    def setUp(self):
        self.work = tempfile.TemporaryDirectory()
        self.log = os.path.join(self.work.name, "calls.jsonl")

    def tearDown(self):
        self.work.cleanup()

    def fake_cli(self, name, tflops, config="wgmma 128x128 s2", fail=False):
        path = os.path.join(self.work.name, name)
        with open(path, "w") as out:
            out.write(FAKE.format(python=sys.executable, tflops=tflops, config=config, fail=fail))
        os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
        return path

    def run_tool(self, *args):
        return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, FAKE_LOG=self.log))

    def calls(self):
        with open(self.log) as log:
            return [json.loads(line) for line in log]

    def test_alternates_the_clis_and_reports_each_round_and_the_ratio_of_the_medians(self):
        seed = os.path.join(self.work.name, "seed.db")
        with open(seed, "w") as out:
            out.write("precompiled")
        head, new = self.fake_cli("head_cli", 500.0), self.fake_cli("new_cli", 550.0)
        json_out = os.path.join(self.work.name, "ab.json")
        result = self.run_tool("--cli", f"head={head}", "--cli", f"new={new}", "--shapes", "12x32768x128",
                               "--densities", "1.0,0.1", "--rounds", "3", "--db", seed,
                               "--bench-args", "--kernel wgmma --stages 3", "--warmup-ms", "7", "--measure-ms", "5",
                               "--json-out", json_out)
        self.assertEqual(result.returncode, 0, result.stderr)

        calls = self.calls()
        self.assertEqual(len(calls), 2 * 2 * 3)  # two CLIs, two densities, three rounds
        # Round 1 starts with the baseline, round 2 with the variant, round 3 with the baseline.
        self.assertEqual([c["cli"] for c in calls],
                         ["head_cli", "new_cli"] * 2 + ["new_cli", "head_cli"] * 2 + ["head_cli", "new_cli"] * 2)
        # Each CLI has a database of its own, a copy of --db, kept across its runs.
        databases = {c["cli"]: {c["db"]} for c in calls}
        for c in calls:
            databases[c["cli"]].add(c["db"])
            self.assertEqual(c["db_contents"], "precompiled")
        self.assertEqual(len(databases["head_cli"]), 1)
        self.assertEqual(len(databases["new_cli"]), 1)
        self.assertNotEqual(databases["head_cli"], databases["new_cli"])
        self.assertFalse(os.path.exists(next(iter(databases["head_cli"]))), "the copies are removed at the end")
        # The shape, the density, the extra options and the timing reach the bench.
        first = calls[0]["argv"]
        for option, value in (("--heads", "12"), ("--tokens", "32768"), ("--head-dim", "128"), ("--density", "1"),
                              ("--kernel", "wgmma"), ("--stages", "3"), ("--warmup-ms", "7"), ("--measure-ms", "5")):
            self.assertIn(value, first[first.index(option) + 1:first.index(option) + 2], (option, first))

        self.assertIn("| H12 N32768 D128 | 1 | 500.0/500.0/500.0 | 550.0/550.0/550.0 | 1.100 |", result.stdout)
        self.assertIn("| H12 N32768 D128 | 0.1 | 450.0/450.0/450.0 | 495.0/495.0/495.0 | 1.100 |", result.stdout)
        self.assertNotIn("different configs", result.stdout)
        with open(json_out) as report:
            saved = json.load(report)
        self.assertEqual(saved["clis"], {"head": head, "new": new})
        self.assertEqual(saved["timing"], {"warmup_ms": 7.0, "measure_ms": 5.0})
        self.assertEqual([row["density"] for row in saved["rows"]], [1.0, 0.1])
        self.assertAlmostEqual(saved["rows"][1]["median_tflops"]["new"], 495.0)
        self.assertAlmostEqual(saved["rows"][1]["ratio_to_baseline"]["new"], 1.1)

    def test_a_failing_run_is_reported_in_its_cell_and_in_the_exit_status(self):
        head, broken = self.fake_cli("head_cli", 500.0), self.fake_cli("broken_cli", 0.0, fail=True)
        result = self.run_tool("--cli", f"head={head}", "--cli", f"broken={broken}", "--shapes", "12x32768x64",
                               "--densities", "0.1", "--rounds", "2")
        self.assertEqual(result.returncode, 1, result.stdout)
        self.assertIn("broken: exit 1: fake: the kernel failed", result.stdout)
        self.assertIn("| H12 N32768 D64 | 0.1 | 450.0/450.0 | failed/failed | n/a |", result.stdout)
        self.assertIsNone(self.calls()[0]["db_contents"], "without --db each CLI starts from no database")

    def test_says_when_the_clis_ran_different_tiles(self):
        head = self.fake_cli("head_cli", 500.0, config="wgmma 128x128 s2")
        new = self.fake_cli("new_cli", 500.0, config="wgmma 128x128 s3")
        result = self.run_tool("--cli", f"head={head}", "--cli", f"new={new}", "--shapes", "12x32768x64",
                               "--densities", "1.0", "--rounds", "1")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("H12 N32768 D64 density 1: different configs: head wgmma 128x128 s2, new wgmma 128x128 s3",
                      result.stdout)

    def test_refuses_what_it_cannot_run(self):
        head = self.fake_cli("head_cli", 500.0)
        cases = [
            (["--cli", "head"], "is not LABEL=PATH"),
            (["--cli", f"head={self.work.name}/missing"], "is not an executable file"),
            (["--cli", f"a/b={head}"], "letters, digits"),
            (["--cli", f"head={head}", "--cli", f"head={head}"], "labels must differ"),
            (["--cli", f"head={head}", "--rounds", "0"], "--rounds must be at least 1"),
            (["--cli", f"head={head}", "--db", f"{self.work.name}/none.db"], "no such file"),
            (["--cli", f"head={head}", "--densities", "1.5"], "is not in (0, 1]"),
            (["--cli", f"head={head}", "--bench-args", "--kernel 'wgmma"], "No closing quotation"),
            (["--cli", f"head={head}", "--timeout", "0"], "--timeout must be positive"),
            ([], "--cli"),
        ]
        for args, message in cases:
            result = self.run_tool(*args)
            self.assertEqual(result.returncode, 2, (args, result.stdout))
            self.assertIn(message, result.stderr, args)
        self.assertFalse(os.path.exists(self.log), "nothing ran")


if __name__ == "__main__":
    unittest.main()
