/* libFuzzer target: a PNG folder entry (ntc_dataset_open on DIR/CLASS/IMG.png).
 *
 * The input is one image of a one-class folder.  The folder is opened
 * twice: at the image's own shape (pixels kept as uint8) and conformed to
 * 3x8x8 (channel conversion and bilinear resampling into float32).  Any
 * input must load or fail with a message; a loaded dataset's pixels are
 * all read through ntc_dataset_get.
 */
#include "fuzz_util.h"

#include <stdlib.h>

#include "ntc/data.h"

static char folder[4096];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_init();
    fuzz_mkdir("png");
    fuzz_mkdir("png/cls");
    fuzz_path("png", folder, sizeof folder);
    return 0;
}

static void open_folder(int c, int h, int w)
{
    ntc_data_opts o;
    ntc_data_opts_default(&o);
    o.source = folder;
    o.split = NTC_SPLIT_ALL;
    o.channels = c, o.height = h, o.width = w;
    o.resize = true;
    ntc_err err = {0};
    ntc_dataset *ds = ntc_dataset_open(&o, &err);
    if (!ds) {
        fuzz_check_err(&err);
        return;
    }
    if (ds->n != 1 || ds->n_classes != 1 || (c && (ds->c != c || ds->h != h || ds->w != w))) {
        fprintf(stderr, "one image in one class became n=%lld classes=%d shape %dx%dx%d\n",
                (long long)ds->n, ds->n_classes, ds->c, ds->h, ds->w);
        abort();
    }
    float *x = malloc(ntc_dataset_example_size(ds) * sizeof(float));
    if (x) {
        ntc_dataset_get(ds, 0, x);
        free(x);
    }
    ntc_dataset_free(ds);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_write("png/cls/img.png", data, size);
    open_folder(0, 0, 0);
    open_folder(3, 8, 8);
    return 0;
}
