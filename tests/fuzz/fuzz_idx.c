/* libFuzzer target: the IDX reader (ntc_idx_read), plain or gzip'ed.
 *
 * Any input must load or fail with a message; a loaded array holds
 * exactly numel bytes (read them all so ASan checks the size).
 */
#include "fuzz_util.h"

#include "ntc/data.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_write("a.idx", data, size);
    ntc_array a = {0};
    ntc_err err = {0};
    if (ntc_idx_read(path, &a, &err)) {
        fuzz_check_err(&err);
        return 0;
    }
    volatile unsigned sum = 0;
    for (int64_t i = 0; i < ntc_array_numel(&a); i++)
        sum += ((const uint8_t *)a.data)[i];
    (void)sum;
    ntc_array_free(&a);
    return 0;
}
