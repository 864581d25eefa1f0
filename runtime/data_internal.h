/* Shared between the dataset sources (dataset.c, png_folder.c): not public. */
#ifndef NTC_DATA_INTERNAL_H
#define NTC_DATA_INTERNAL_H

#include "ntc/data.h"

/* Converts one image src [c0,h0,w0] (values in [0,1]) to dst [c,h,w]:
 * channels 1/2 (gray, gray+alpha) -> 3 by replication, 3/4 (RGB, RGBA) -> 1 by
 * ITU-R 601 luma, alpha dropped; then bilinear resampling with half-pixel
 * centres (PyTorch's interpolate(mode="bilinear", align_corners=False)).
 * Returns -1 when the channel conversion is not one of those. */
int ntc__conform_image(const float *src, int c0, int h0, int w0, float *dst, int c, int h, int w);
/* Whether ntc__conform_image can convert c0 channels into c. */
bool ntc__channels_convertible(int c0, int c);

/* Loads every PNG of dir/CLASS/ (CLASS = subdirectories in sorted order),
 * conformed to o's shape (or the first image's), as an unsplit dataset. */
ntc_dataset *ntc__png_folder_load(const char *dir, const ntc_data_opts *o, ntc_err *err);

/* An empty dataset named name; NULL when out of memory. */
ntc_dataset *ntc__dataset_alloc(const char *name);

#endif
