// slowmo/problems/idx.hpp — a reader of IDX files, the format of MNIST and Fashion-MNIST
// (LeCun et al., http://yann.lecun.com/exdb/mnist/): a big-endian magic number 0x0000TTDD
// (TT the element type, 0x08 for unsigned bytes; DD the number of dimensions), DD big-endian
// 32-bit dimensions, then the elements in row-major order. Images are 3-d (count x rows x
// cols), labels 1-d (count). Files may be gzip-compressed or not: zlib's gzread reads both.
//
// Every problem with a file (missing, truncated, malformed, longer than its header says,
// labels out of range or not as many as the images) throws data_error naming the file and
// what was expected against what was found. Needs zlib: link slowmo::data.
#pragma once

#include <zlib.h>

#include <Eigen/Core>
#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "slowmo/core/error.hpp"
#include "slowmo/problems/dataset.hpp"

namespace slowmo::problems {

/// Images read from an IDX file: column j of X is image j, its pixel (r, c) at row
/// r * cols + c, scaled from the file's bytes to [0, 1] (byte / 255).
struct IdxImages {
  Eigen::MatrixXf X;  ///< (rows * cols) x count
  Eigen::Index rows = 0, cols = 0;
};

namespace detail {

/// The IDX magic numbers: element type 0x08 (unsigned byte) and the number of dimensions.
inline constexpr std::uint32_t idx_images_magic = 0x00000803;
inline constexpr std::uint32_t idx_labels_magic = 0x00000801;

inline std::string_view idx_type_name(unsigned type) {
  switch (type) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    default: return "no IDX type";
  }
}

inline std::string hex32(std::uint32_t v) {
  constexpr char digits[] = "0123456789abcdef";
  std::string s = "0x";
  for (int shift = 28; shift >= 0; shift -= 4) s += digits[(v >> shift) & 0xF];
  return s;
}

/// One IDX file open for reading, through zlib (which passes uncompressed files through).
/// Reads the header, then the data, then checks that nothing follows; each step throws
/// data_error naming the file.
class IdxFile {
 public:
  /// `owner` names the public function for messages ("read_idx"); `what` says what the
  /// file holds ("images", "labels").
  IdxFile(std::filesystem::path path, std::string_view owner, std::string_view what)
      : path_(std::move(path)), owner_(owner), what_(what) {
    std::error_code ec;
    const auto st = std::filesystem::status(path_, ec);
    if (!std::filesystem::exists(st)) fail("no such file");
    if (std::filesystem::is_directory(st)) fail("is a directory, not an IDX file");
    errno = 0;
    file_ = gzopen(path_.string().c_str(), "rb");
    if (!file_)
      fail(concat("cannot open it: ",
                  errno ? std::error_code(errno, std::generic_category()).message() : "zlib could not allocate"));
    gzbuffer(file_, 1u << 17);  // bigger than zlib's 8 KiB default: fewer system calls
  }
  IdxFile(const IdxFile&) = delete;
  IdxFile& operator=(const IdxFile&) = delete;
  ~IdxFile() {
    if (file_) gzclose(file_);
  }

  const std::filesystem::path& path() const { return path_; }

  /// Reads the magic number and the dimensions; throws unless the elements are unsigned bytes
  /// in `dims` dimensions. Returns the dimensions.
  std::vector<std::uint32_t> read_header(std::uint32_t magic) {
    const std::uint32_t dims = magic & 0xFF;
    const std::uint32_t got = read_u32("the 4-byte magic number");
    const std::uint32_t got_type = (got >> 8) & 0xFF, got_dims = got & 0xFF;
    if ((got >> 16) != 0)
      fail(concat("not an IDX file: magic number ", hex32(got), " (expected ", hex32(magic),
                  ": two zero bytes, type 0x08, ", dims, " dimensions)"));
    if (got_type != 0x08)
      fail(concat("wrong element type 0x", hex32(got_type).substr(8), " (", idx_type_name(got_type),
                  ") in magic number ", hex32(got), " (expected ", hex32(magic), ": unsigned bytes)"));
    if (got_dims != dims)
      fail(concat("wrong number of dimensions: ", got_dims, " in magic number ", hex32(got), " (expected ", dims,
                  " for ", what_, ", magic ", hex32(magic), ")"));
    std::vector<std::uint32_t> shape(dims);
    for (std::uint32_t d = 0; d < dims; ++d) shape[d] = read_u32(concat("dimension ", d));
    return shape;
  }

  /// Reads exactly `count` bytes of data; throws if the file ends (or fails) before.
  std::vector<unsigned char> read_data(std::uint64_t count) {
    std::vector<unsigned char> out;
    // Grow as bytes arrive rather than trusting the header with one huge allocation: a
    // corrupt header then fails as truncated instead of as out of memory.
    out.reserve(std::size_t(std::min<std::uint64_t>(count, std::uint64_t(1) << 26)));
    while (out.size() < count) {
      const std::size_t chunk = std::size_t(std::min<std::uint64_t>(count - out.size(), 1u << 20));
      const std::size_t old = out.size();
      out.resize(old + chunk);
      const int got = gzread(file_, out.data() + old, unsigned(chunk));
      if (got < 0) fail(concat("cannot read the ", what_, " after byte ", consumed_, ": ", read_failure()));
      out.resize(old + std::size_t(got));
      consumed_ += std::uint64_t(got);
      if (std::size_t(got) < chunk)
        fail(concat("truncated: the header promises ", count, " bytes of ", what_, " but the file ends after ",
                    out.size(), " of them", zlib_suffix()));
    }
    return out;
  }

  /// Throws if anything follows the data the header promised.
  void expect_end(std::uint64_t data_bytes) {
    unsigned char buf[4096];
    std::uint64_t extra = 0;
    for (;;) {
      const int got = gzread(file_, buf, unsigned(sizeof buf));
      if (got < 0) fail(concat("cannot read past the ", what_, " (byte ", consumed_ + extra, "): ", read_failure()));
      if (got == 0) break;
      extra += std::uint64_t(got);
    }
    if (extra > 0)
      fail(concat("trailing data: ", extra, " bytes after the ", data_bytes, " bytes of ", what_,
                  " that the header promises (expected the file to end at byte ", consumed_, ")"));
  }

  [[noreturn]] void fail(std::string_view problem) const {
    throw data_error(concat("slowmo::problems::", owner_, ": ", what_, " file '", path_.string(), "': ", problem));
  }

 private:
  template <class... Parts>
  static std::string concat(const Parts&... parts) {
    return slowmo::detail::concat(parts...);
  }

  std::uint32_t read_u32(std::string_view field) {
    unsigned char b[4];
    const int got = gzread(file_, b, 4);
    if (got < 0) fail(concat("cannot read ", field, " of the header: ", read_failure()));
    if (got < 4) {
      if (consumed_ + std::uint64_t(got) == 0) fail("the file is empty (expected an IDX header)");
      fail(concat("truncated: the file ends after ", consumed_ + std::uint64_t(got), " bytes, inside ", field,
                  " of the header", zlib_suffix()));
    }
    consumed_ += 4;
    return std::uint32_t(b[0]) << 24 | std::uint32_t(b[1]) << 16 | std::uint32_t(b[2]) << 8 | std::uint32_t(b[3]);
  }

  std::string zlib_message() const {
    int err = Z_OK;
    const char* msg = gzerror(file_, &err);
    if (err == Z_ERRNO) return std::error_code(errno, std::generic_category()).message();
    // zlib prefixes its message with the path, which ours names already.
    std::string_view m = msg;
    const std::string prefix = path_.string() + ": ";
    if (m.starts_with(prefix)) m.remove_prefix(prefix.size());
    return std::string(m);
  }
  /// Why gzread failed: the system's word for an I/O error, or zlib's for bad compressed data.
  std::string read_failure() const {
    int err = Z_OK;
    gzerror(file_, &err);
    if (err == Z_ERRNO) return zlib_message();
    if (err == Z_DATA_ERROR) return "corrupt gzip data (zlib: " + zlib_message() + ")";
    return "zlib: " + zlib_message();
  }
  /// " (zlib: unexpected end of file)" when zlib saw a cut compressed stream, else nothing.
  std::string zlib_suffix() const {
    int err = Z_OK;
    gzerror(file_, &err);
    return err == Z_OK ? std::string() : " (zlib: " + zlib_message() + ")";
  }

  std::filesystem::path path_;
  std::string_view owner_, what_;
  gzFile file_ = nullptr;
  std::uint64_t consumed_ = 0;  ///< bytes read so far (after decompression)
};

/// count x rows x cols bytes, refusing a header whose size overflows an Eigen::Index.
inline std::uint64_t idx_bytes(const IdxFile& f, const std::vector<std::uint32_t>& shape) {
  std::uint64_t bytes = 1;
  for (const std::uint32_t d : shape) {
    if (d != 0 && bytes > std::uint64_t(std::numeric_limits<Eigen::Index>::max()) / d)
      f.fail("the header's dimensions describe more bytes than this machine can index");
    bytes *= d;
  }
  return bytes;
}

inline void check_image_shape(const IdxFile& f, const std::vector<std::uint32_t>& shape) {
  if (shape[1] == 0 || shape[2] == 0)
    f.fail(slowmo::detail::concat("images of ", shape[1], " x ", shape[2], " pixels (expected at least 1 x 1)"));
}

inline IdxImages read_image_data(IdxFile& f, const std::vector<std::uint32_t>& shape) {
  const std::uint64_t bytes = idx_bytes(f, shape);
  const std::vector<unsigned char> raw = f.read_data(bytes);
  f.expect_end(bytes);
  IdxImages img{.X = Eigen::MatrixXf(Eigen::Index(shape[1]) * Eigen::Index(shape[2]), Eigen::Index(shape[0])),
                .rows = Eigen::Index(shape[1]),
                .cols = Eigen::Index(shape[2])};
  // Image j's bytes are contiguous in the file and column j is contiguous in X (column-major):
  // one pass in file order.
  float* x = img.X.data();
  for (std::size_t k = 0; k < raw.size(); ++k) x[k] = float(raw[k]) / 255.0f;
  return img;
}

inline std::vector<std::int32_t> read_label_data(IdxFile& f, const std::vector<std::uint32_t>& shape, int classes) {
  const std::uint64_t bytes = idx_bytes(f, shape);
  const std::vector<unsigned char> raw = f.read_data(bytes);
  f.expect_end(bytes);
  std::vector<std::int32_t> y(raw.size());
  for (std::size_t j = 0; j < raw.size(); ++j) {
    if (int(raw[j]) >= classes)
      f.fail(slowmo::detail::concat("label ", int(raw[j]), " of sample ", j, " is out of range (expected [0, ",
                                    classes, "))"));
    y[j] = std::int32_t(raw[j]);
  }
  return y;
}

inline void require_classes(std::string_view owner, int classes) {
  slowmo::detail::require_option(classes >= 1, owner, "classes", classes, "must be >= 1");
}

}  // namespace detail

/// The images of an IDX file (magic 0x00000803: unsigned bytes, count x rows x cols),
/// scaled to [0, 1].
inline IdxImages read_idx_images(const std::filesystem::path& images) {
  detail::IdxFile f(images, "read_idx_images", "images");
  const auto shape = f.read_header(detail::idx_images_magic);
  detail::check_image_shape(f, shape);
  return detail::read_image_data(f, shape);
}

/// The labels of an IDX file (magic 0x00000801: unsigned bytes, count); each must be in
/// [0, classes).
inline std::vector<std::int32_t> read_idx_labels(const std::filesystem::path& labels, int classes) {
  detail::require_classes("problems::read_idx_labels", classes);
  detail::IdxFile f(labels, "read_idx_labels", "labels");
  const auto shape = f.read_header(detail::idx_labels_magic);
  return detail::read_label_data(f, shape, classes);
}

/// A labelled dataset from an images file and a labels file of the same count. Both headers
/// are read (and their counts compared) before either's data, so that a mismatch costs no
/// decompression.
inline Dataset read_idx(const std::filesystem::path& images, const std::filesystem::path& labels, int classes,
                        std::string name) {
  detail::require_classes("problems::read_idx", classes);
  detail::IdxFile fi(images, "read_idx", "images");
  const auto image_shape = fi.read_header(detail::idx_images_magic);
  detail::check_image_shape(fi, image_shape);
  detail::IdxFile fl(labels, "read_idx", "labels");
  const auto label_shape = fl.read_header(detail::idx_labels_magic);
  if (label_shape[0] != image_shape[0])
    fl.fail(slowmo::detail::concat("holds ", label_shape[0], " labels but images file '", images.string(),
                                   "' holds ", image_shape[0], " images (expected as many labels as images)"));
  std::vector<std::int32_t> y = detail::read_label_data(fl, label_shape, classes);
  IdxImages img = detail::read_image_data(fi, image_shape);
  return Dataset{.X = std::move(img.X), .y = std::move(y), .classes = classes, .name = std::move(name)};
}

}  // namespace slowmo::problems
