/* IDX files (LeCun's MNIST format, also used by Fashion-MNIST):
 *
 *   00 00 TYPE RANK   then RANK big-endian uint32 dimensions, then the data.
 *
 * zlib's gzread reads gzip-compressed and plain files alike, so the same
 * code serves "train-images-idx3-ubyte" and "train-images-idx3-ubyte.gz".
 * Only TYPE 0x08 (unsigned byte) exists in the datasets ntc reads; the
 * other types are named in the error.
 */
#include "ntc/data.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <zlib.h>

static const char *idx_type_name(int t)
{
    switch (t) {
    case 0x08: return "uint8";
    case 0x09: return "int8";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    }
    return NULL;
}

/* Reads exactly len bytes; returns the count actually read (short at EOF), or
 * -1 on a zlib error (corrupt gzip stream). */
static int64_t gz_read_all(gzFile f, void *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        size_t chunk = len - done > (size_t)INT_MAX ? (size_t)INT_MAX : len - done;
        int r = gzread(f, (char *)buf + done, (unsigned)chunk);
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        done += (size_t)r;
    }
    return (int64_t)done;
}

static int gz_fail(gzFile f, const char *path, ntc_err *err)
{
    int code;
    const char *msg = gzerror(f, &code);
    if (code == Z_ERRNO)   /* the file itself, e.g. a directory */
        return ntc_error(err, path, 0, "cannot read: %s", strerror(errno));
    /* zlib prefixes its message with the path, which the error has already */
    size_t pl = strlen(path);
    if (msg && !strncmp(msg, path, pl) && !strncmp(msg + pl, ": ", 2))
        msg += pl + 2;
    return ntc_error(err, path, 0, "corrupt gzip data: %s", msg ? msg : "unknown zlib error");
}

static int read_idx_stream(gzFile f, const char *path, ntc_array *out, ntc_err *err)
{
    unsigned char hdr[4];
    int64_t got = gz_read_all(f, hdr, 4);
    if (got < 0)
        return gz_fail(f, path, err);
    if (got < 4 || hdr[0] || hdr[1])
        return ntc_error(err, path, 0, "not an IDX file (bad magic: expected 00 00 TYPE RANK)");
    const char *tname = idx_type_name(hdr[2]);
    if (!tname)
        return ntc_error(err, path, 0, "not an IDX file (unknown element type 0x%02x)", hdr[2]);
    if (hdr[2] != 0x08)
        return ntc_error(err, path, 0, "IDX element type %s is not supported (only uint8)", tname);
    int rank = hdr[3];
    if (rank < 1 || rank > NTC_MAX_RANK)
        return ntc_error(err, path, 0, "IDX rank %d is not supported (1..%d)", rank, NTC_MAX_RANK);
    unsigned char dims[4 * NTC_MAX_RANK];
    got = gz_read_all(f, dims, 4 * (size_t)rank);
    if (got < 0)
        return gz_fail(f, path, err);
    if (got < 4 * rank)
        return ntc_error(err, path, 0, "truncated IDX header");
    ntc_shape shape = {.rank = rank};
    size_t n = 1;
    for (int i = 0; i < rank; i++) {
        const unsigned char *d = dims + 4 * i;
        shape.dims[i] = (int64_t)((uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 |
                                  (uint32_t)d[2] << 8 | d[3]);
        if (shape.dims[i] == 0)
            return ntc_error(err, path, 0, "IDX dimension %d is 0 (an empty data set)", i + 1);
        if (__builtin_mul_overflow(n, (size_t)shape.dims[i], &n) || n > (size_t)INT64_MAX)
            return ntc_error(err, path, 0, "IDX dimensions too large");
    }
    uint8_t *data = ntc_malloc(n ? n : 1);
    if (!data)
        return ntc_error(err, path, 0, "out of memory for %zu bytes", n);
    got = gz_read_all(f, data, n);
    if (got < 0) {
        ntc_free(data);
        return gz_fail(f, path, err);
    }
    if ((size_t)got < n) {
        ntc_free(data);
        return ntc_error(err, path, 0, "truncated IDX data: header announces %zu bytes, file has %lld",
                         n, (long long)got);
    }
    unsigned char extra;
    got = gz_read_all(f, &extra, 1);
    if (got != 0) {
        ntc_free(data);
        return got < 0 ? gz_fail(f, path, err) : ntc_error(err, path, 0, "trailing bytes after the IDX data");
    }
    /* A gzip stream cut before its CRC trailer reads to the end of the data
     * without an error; zlib says so only now. */
    int code;
    gzerror(f, &code);
    if (code != Z_OK) {
        ntc_free(data);
        return gz_fail(f, path, err);
    }
    out->dtype = NTC_DT_U8;
    out->shape = shape;
    out->data = data;
    return 0;
}

int ntc_idx_read(const char *path, ntc_array *out, ntc_err *err)
{
    memset(out, 0, sizeof *out);
    errno = 0;
    gzFile f = gzopen(path, "rb");
    if (!f)
        return ntc_error(err, path, 0, "cannot open: %s", errno ? strerror(errno) : "out of memory");
    gzbuffer(f, 1 << 17);
    int rc = read_idx_stream(f, path, out, err);
    gzclose(f);
    return rc;
}
