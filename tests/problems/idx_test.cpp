// The IDX reader on hand-made files, plain and gzip-compressed: a valid file round-trips
// with exact pixel values, and each kind of bad file throws data_error naming the file and
// what is wrong.
#include <doctest/doctest.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <slowmo/problems/idx.hpp>

namespace {

namespace fs = std::filesystem;
namespace problems = slowmo::problems;
using Bytes = std::vector<unsigned char>;

/// A fresh directory under the system's temporary directory, removed with its files.
struct TempDir {
  fs::path path;
  TempDir() {
    static std::atomic<int> counter{0};
    path = fs::temp_directory_path() /
           ("slowmo_idx_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

void put_u32(Bytes& b, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) b.push_back(static_cast<unsigned char>(v >> shift));
}

/// An IDX file: magic, big-endian dimensions, then `payload`.
Bytes idx(std::uint32_t magic, const std::vector<std::uint32_t>& dims, const Bytes& payload) {
  Bytes b;
  put_u32(b, magic);
  for (const auto d : dims) put_u32(b, d);
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

enum class Compression { plain, gzip };

fs::path write(const fs::path& path, const Bytes& bytes, Compression c) {
  if (c == Compression::plain) {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    REQUIRE(out.good());
  } else {
    gzFile f = gzopen(path.string().c_str(), "wb");
    REQUIRE(f != nullptr);
    if (!bytes.empty()) REQUIRE(gzwrite(f, bytes.data(), unsigned(bytes.size())) == int(bytes.size()));
    REQUIRE(gzclose(f) == Z_OK);
  }
  return path;
}

Bytes read_all(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Two 2 x 3 images (row by row) and their labels.
const Bytes pixels = {0, 1, 2, 127, 128, 255,  // image 0
                      3, 50, 100, 200, 254, 17};  // image 1
const Bytes labels = {1, 0};
constexpr std::uint32_t images_magic = 0x00000803, labels_magic = 0x00000801;

Bytes good_images() { return idx(images_magic, {2, 2, 3}, pixels); }
Bytes good_labels() { return idx(labels_magic, {2}, labels); }

/// The exception's message, checked to be a data_error naming `path`.
template <class F>
std::string data_error_message(F&& f, const fs::path& path) {
  try {
    f();
  } catch (const problems::data_error& e) {
    const std::string what = e.what();
    CHECK_MESSAGE(what.find(path.string()) != std::string::npos, what);
    return what;
  }
  FAIL("no data_error for " << path.string());
  return {};
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("IDX: a valid file round-trips, plain and gzipped") {
  for (const auto c : {Compression::plain, Compression::gzip}) {
    CAPTURE(int(c));
    TempDir dir;
    const auto im = write(dir.path / "images", good_images(), c);
    const auto lb = write(dir.path / "labels", good_labels(), c);
    const problems::Dataset ds = problems::read_idx(im, lb, 2, "tiny");
    CHECK(ds.name == "tiny");
    CHECK(ds.classes == 2);
    REQUIRE(ds.size() == 2);
    REQUIRE(ds.features() == 6);
    CHECK(ds.y == std::vector<std::int32_t>{1, 0});
    // Column j is image j, pixel (r, c) at row 3 r + c, byte k mapped to k / 255.
    for (Eigen::Index j = 0; j < 2; ++j)
      for (Eigen::Index r = 0; r < 2; ++r)
        for (Eigen::Index col = 0; col < 3; ++col)
          CHECK(ds.X(r * 3 + col, j) == float(pixels[std::size_t(j * 6 + r * 3 + col)]) / 255.0f);
    CHECK(ds.X(5, 0) == 1.0f);
    CHECK(ds.X(0, 0) == 0.0f);
    CHECK_NOTHROW(ds.validate());

    const problems::IdxImages img = problems::read_idx_images(im);
    CHECK(img.rows == 2);
    CHECK(img.cols == 3);
    CHECK(img.X == ds.X);
    CHECK(problems::read_idx_labels(lb, 2) == ds.y);
  }
}

TEST_CASE("IDX: every kind of bad file throws data_error naming the file and the problem") {
  for (const auto c : {Compression::plain, Compression::gzip}) {
    CAPTURE(int(c));
    TempDir dir;
    const auto lb = write(dir.path / "labels", good_labels(), c);
    const auto im = write(dir.path / "images", good_images(), c);
    auto images_error = [&](const Bytes& bytes) {
      const auto p = write(dir.path / "bad_images", bytes, c);
      return data_error_message([&] { problems::read_idx(p, lb, 2, "bad"); }, p);
    };
    auto labels_error = [&](const Bytes& bytes, int classes = 2) {
      const auto p = write(dir.path / "bad_labels", bytes, c);
      return data_error_message([&] { problems::read_idx(im, p, classes, "bad"); }, p);
    };

    SUBCASE("missing") {
      const auto p = dir.path / "nowhere";
      CHECK(contains(data_error_message([&] { problems::read_idx(p, lb, 2, "x"); }, p), "no such file"));
      CHECK(contains(data_error_message([&] { problems::read_idx(im, p, 2, "x"); }, p), "no such file"));
      CHECK(contains(data_error_message([&] { problems::read_idx_images(p); }, p), "no such file"));
    }
    SUBCASE("a directory") {
      CHECK(contains(data_error_message([&] { problems::read_idx_labels(dir.path, 2); }, dir.path), "is a directory"));
    }
    SUBCASE("empty") { CHECK(contains(images_error({}), "the file is empty")); }
    SUBCASE("truncated header") {
      const Bytes whole = good_images();
      CHECK(contains(images_error(Bytes(whole.begin(), whole.begin() + 2)), "inside the 4-byte magic number"));
      const std::string m = images_error(Bytes(whole.begin(), whole.begin() + 10));
      CHECK(contains(m, "truncated: the file ends after 10 bytes, inside dimension 1 of the header"));
    }
    SUBCASE("truncated data") {
      const Bytes whole = good_images();
      const std::string m = images_error(Bytes(whole.begin(), whole.end() - 1));
      CHECK(contains(m, "truncated: the header promises 12 bytes of images but the file ends after 11 of them"));
      const Bytes lbl = good_labels();
      CHECK(contains(labels_error(Bytes(lbl.begin(), lbl.end() - 1)),
                     "the header promises 2 bytes of labels but the file ends after 1 of them"));
    }
    SUBCASE("wrong magic") {
      const std::string m = images_error(idx(0x12345678, {2, 2, 3}, pixels));
      CHECK(contains(m, "not an IDX file: magic number 0x12345678 (expected 0x00000803"));
    }
    SUBCASE("wrong element type") {
      const std::string m = images_error(idx(0x00000D03, {2, 2, 3}, pixels));
      CHECK(contains(m, "wrong element type 0x0d (float32)"));
      CHECK(contains(m, "expected 0x00000803"));
    }
    SUBCASE("wrong dimension count") {
      // A labels file given as the images, and an images file as the labels.
      const std::string m = images_error(good_labels());
      CHECK(contains(m, "wrong number of dimensions: 1 in magic number 0x00000801 (expected 3 for images"));
      const std::string n = labels_error(good_images());
      CHECK(contains(n, "wrong number of dimensions: 3 in magic number 0x00000803 (expected 1 for labels"));
    }
    SUBCASE("images without pixels") {
      CHECK(contains(images_error(idx(images_magic, {2, 0, 3}, {})), "images of 0 x 3 pixels"));
    }
    SUBCASE("counts disagree") {
      const std::string m = labels_error(idx(labels_magic, {3}, {1, 0, 1}));
      CHECK(contains(m, "holds 3 labels but images file '" + im.string() + "' holds 2 images"));
    }
    SUBCASE("label out of range") {
      const std::string m = labels_error(idx(labels_magic, {2}, {0, 7}), 5);
      CHECK(contains(m, "label 7 of sample 1 is out of range (expected [0, 5))"));
    }
    SUBCASE("trailing garbage") {
      Bytes longer = good_images();
      longer.insert(longer.end(), {9, 9, 9});
      const std::string m = images_error(longer);
      CHECK(contains(m, "trailing data: 3 bytes after the 12 bytes of images that the header promises"));
      CHECK(contains(m, "expected the file to end at byte 28"));  // 16-byte header + 12 pixels
      Bytes more_labels = good_labels();
      more_labels.push_back(1);
      CHECK(contains(labels_error(more_labels), "trailing data: 1 bytes after the 2 bytes of labels"));
    }
  }
}

TEST_CASE("IDX: a cut or corrupted gzip stream is reported, not read as data") {
  TempDir dir;
  // Enough bytes that the compressed stream has a middle to cut or damage.
  Bytes many(30000);
  for (std::size_t k = 0; k < many.size(); ++k) many[k] = static_cast<unsigned char>((k * 7919) % 251);
  const auto whole = write(dir.path / "whole.gz", idx(images_magic, {30, 40, 25}, many), Compression::gzip);
  const Bytes gz = read_all(whole);
  REQUIRE(gz.size() > 100);

  const auto cut = write(dir.path / "cut.gz", Bytes(gz.begin(), gz.begin() + std::ptrdiff_t(gz.size() / 2)),
                         Compression::plain);
  const std::string m = data_error_message([&] { problems::read_idx_images(cut); }, cut);
  CHECK(contains(m, "truncated"));
  CHECK(contains(m, "unexpected end of file"));  // zlib's word for it

  Bytes damaged = gz;
  for (std::size_t k = gz.size() / 3; k < gz.size() / 3 + 16; ++k) damaged[k] ^= 0x5A;
  const auto bad = write(dir.path / "damaged.gz", damaged, Compression::plain);
  CHECK(contains(data_error_message([&] { problems::read_idx_images(bad); }, bad), "corrupt gzip data"));

  CHECK(problems::read_idx_images(whole).X.cols() == 30);
}

TEST_CASE("IDX: classes must be >= 1") {
  TempDir dir;
  const auto lb = write(dir.path / "labels", good_labels(), Compression::plain);
  CHECK_THROWS_WITH_AS(problems::read_idx_labels(lb, 0), doctest::Contains("option 'classes' = 0 is invalid"),
                       slowmo::invalid_option);
  CHECK_THROWS_AS(problems::read_idx(lb, lb, -1, "x"), slowmo::invalid_option);
}
