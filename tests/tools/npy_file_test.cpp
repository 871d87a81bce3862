// The .npy reader: files written here byte by byte as NumPy writes them (versions 1 and 2,
// float16, float32, bfloat16), and broken ones, each refused with a message that says why.
#include <gtest/gtest.h>

#include <cstring>

#include "templates/common/half_precision.h"
#include "tests/support/npy_writer.h"
#include "tests/support/test_support.h"
#include "tools/npy_file.h"

namespace sparsejit::tools {
namespace {

using templates::HalfDtype;

using testing::npy_bytes;

using testing::raw_bytes;

class NpyFileTest : public ::testing::Test {
 protected:
  std::filesystem::path write(const std::vector<char>& bytes) {
    const std::filesystem::path path = directory_ / ("file" + std::to_string(files_++) + ".npy");
    testing::write_bytes(path, bytes);
    return path;
  }
  void expect_refused(const std::vector<char>& bytes, const std::string& words) {
    const std::filesystem::path path = write(bytes);
    try {
      read_npy(path);
      ADD_FAILURE() << "expected a refusal mentioning '" << words << "'";
    } catch (const std::runtime_error& error) {
      EXPECT_NE(std::string(error.what()).find(words), std::string::npos) << error.what();
      EXPECT_NE(std::string(error.what()).find(path.string()), std::string::npos) << "names the file";
    }
  }
  testing::TempDirectory directory_;
  int files_ = 0;
};

TEST_F(NpyFileTest, ReadsFloat32AndConvertsToBothHalfTypes) {
  std::vector<float> values(2 * 3 * 4);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = 0.25f * static_cast<float>(i) - 2.f;
  const NpyArray array = read_npy(write(npy_bytes("<f4", "(2, 3, 4)", raw_bytes(values))));
  EXPECT_EQ(array.shape, (std::vector<std::size_t>{2, 3, 4}));
  EXPECT_EQ(array.dtype, NpyDtype::float32);
  for (HalfDtype dtype : {HalfDtype::bf16, HalfDtype::fp16}) {
    const std::vector<std::uint16_t> half = array.to_half(dtype);
    ASSERT_EQ(half.size(), values.size());
    for (std::size_t i = 0; i < values.size(); ++i) EXPECT_EQ(half[i], templates::float_to_half_bits(values[i], dtype));
  }
}

TEST_F(NpyFileTest, ReadsFloat16AndBfloat16BitForBitInVersions1And2) {
  std::vector<std::uint16_t> bits;
  for (int i = 0; i < 5 * 2 * 8; ++i) bits.push_back(templates::float_to_half_bits(0.1f * i, HalfDtype::fp16));
  const NpyArray fp16 = read_npy(write(npy_bytes("<f2", "(5, 2, 8)", raw_bytes(bits), 2)));
  EXPECT_EQ(fp16.dtype, NpyDtype::float16);
  EXPECT_EQ(fp16.to_half(HalfDtype::fp16), bits);
  const std::vector<std::uint16_t> as_bf16 = fp16.to_half(HalfDtype::bf16);
  EXPECT_EQ(as_bf16[7], templates::float_to_half_bits(templates::half_bits_to_float(bits[7], HalfDtype::fp16), HalfDtype::bf16));
  for (const char* descr : {"<V2", "bfloat16"}) {
    const NpyArray bf16 = read_npy(write(npy_bytes(descr, "(80,)", raw_bytes(bits))));
    EXPECT_EQ(bf16.dtype, NpyDtype::bfloat16) << descr;
    EXPECT_EQ(bf16.shape, (std::vector<std::size_t>{80}));
    EXPECT_EQ(bf16.to_half(HalfDtype::bf16), bits);
  }
}

TEST_F(NpyFileTest, RefusesBrokenFilesSayingWhy) {
  const std::vector<char> data = raw_bytes(std::vector<float>(24, 1.f));
  std::vector<char> truncated = npy_bytes("<f4", "(2, 3, 4)", data);
  truncated.resize(truncated.size() - 5);
  expect_refused(truncated, "truncated");
  std::vector<char> cut_header = npy_bytes("<f4", "(2, 3, 4)", data);
  cut_header.resize(40);
  expect_refused(cut_header, "header is cut short");
  std::vector<char> not_npy = npy_bytes("<f4", "(2, 3, 4)", data);
  not_npy[1] = 'X';
  expect_refused(not_npy, "not an .npy file");
  expect_refused(npy_bytes("<f8", "(3,)", data), "not supported");
  expect_refused(npy_bytes(">f4", "(3,)", data), "not supported");
  expect_refused(npy_bytes("<f4", "(2, 3, 4)", data, 1, "True"), "Fortran order");
  expect_refused(npy_bytes("<f4", "(2, x)", data), "not a tuple of sizes");
  std::vector<char> version = npy_bytes("<f4", "(3,)", data);
  version[6] = 9;
  expect_refused(version, "version 9");
  expect_refused({}, "not an .npy file");
  EXPECT_THROW(read_npy(directory_ / "missing.npy"), std::runtime_error);
}

}  // namespace
}  // namespace sparsejit::tools
