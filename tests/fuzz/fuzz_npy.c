/* libFuzzer target: the NumPy .npy reader (ntc_npy_read).
 *
 * Any input must load or fail with a message.  An array that loads is
 * written back with ntc_npy_write and read again: same dtype, shape and
 * bytes (the reader and the writer agree on the format).
 */
#include "fuzz_util.h"

#include "ntc/data.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_init();
    return 0;
}

static void round_trip(const ntc_array *a)
{
    char path[4096];
    fuzz_path("again.npy", path, sizeof path);
    ntc_err err = {0};
    if (ntc_npy_write(path, a, &err))
        return;                          /* out of memory under the cap */
    fuzz_remember(path);
    ntc_array b = {0};
    if (ntc_npy_read(path, &b, &err)) {
        fprintf(stderr, "ntc_npy_write's output does not read back: %s\n", ntc_err_str(&err));
        abort();
    }
    size_t bytes = (size_t)ntc_array_numel(a) * ntc_dtype_size(a->dtype);
    if (b.dtype != a->dtype || b.shape.rank != a->shape.rank ||
        memcmp(b.shape.dims, a->shape.dims, sizeof(a->shape.dims[0]) * (size_t)a->shape.rank) ||
        memcmp(b.data, a->data, bytes)) {
        fprintf(stderr, "a .npy round trip changed the array\n");
        abort();
    }
    ntc_array_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_write("a.npy", data, size);
    ntc_array a = {0};
    ntc_err err = {0};
    if (ntc_npy_read(path, &a, &err)) {
        fuzz_check_err(&err);
        return 0;
    }
    round_trip(&a);
    ntc_array_free(&a);
    return 0;
}
