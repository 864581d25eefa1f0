/* NumPy .npy reading and writing: round trips, files written by NumPy
 * (tests/fixtures/data/make_fixtures.py), and every refused kind of file. */
#include "testutil.h"
#include "ntc/data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *fixture(const char *name)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s", tu_src("tests/fixtures/data/"));
    strncat(buf, name, sizeof buf - strlen(buf) - 1);
    return buf;
}

static char *tmp_path(const char *name)
{
    static char buf[512];
    snprintf(buf, sizeof buf, "%s/%s", tu_tmpdir(), name);
    return buf;
}

static ntc_shape shape_of(int rank, const int64_t *dims)
{
    ntc_shape s = {.rank = rank};
    for (int i = 0; i < rank; i++)
        s.dims[i] = dims[i];
    return s;
}

START_TEST(roundtrip_f32)
{
    int64_t dims[] = {2, 3, 5, 7};
    float data[210];
    unsigned st = 7;
    for (int i = 0; i < 210; i++)
        data[i] = tu_randf(&st) * 1e3f;
    data[3] = -0.0f;
    ntc_array a = {NTC_DT_F32, shape_of(4, dims), data}, b;
    ntc_err err = {0};
    const char *path = tmp_path("x.npy");
    ck_assert_msg(ntc_npy_write(path, &a, &err) == 0, "%s", ntc_err_str(&err));
    ck_assert_msg(ntc_npy_read(path, &b, &err) == 0, "%s", ntc_err_str(&err));
    ck_assert_int_eq(b.dtype, NTC_DT_F32);
    ck_assert_int_eq(b.shape.rank, 4);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(b.shape.dims[i], dims[i]);
    ck_assert_mem_eq(b.data, data, sizeof data);   /* bit-exact, -0.0 included */
    ntc_array_free(&b);
    ck_assert_ptr_null(b.data);
}
END_TEST

START_TEST(roundtrip_u8_and_small_ranks)
{
    uint8_t bytes[256];
    for (int i = 0; i < 256; i++)
        bytes[i] = (uint8_t)(255 - i);
    int64_t dims1[] = {256}, dims0[] = {0, 4};
    struct { int rank; const int64_t *dims; int64_t numel; } cases[] = {
        {1, dims1, 256},   /* "(256,)" */
        {0, NULL, 1},      /* scalar "()" */
        {2, dims0, 0},     /* empty "(0, 4)" */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        ntc_array a = {NTC_DT_U8, shape_of(cases[c].rank, cases[c].dims), bytes}, b;
        ntc_err err = {0};
        const char *path = tmp_path("u.npy");
        ck_assert_msg(ntc_npy_write(path, &a, &err) == 0, "%s", ntc_err_str(&err));
        ck_assert_msg(ntc_npy_read(path, &b, &err) == 0, "%s", ntc_err_str(&err));
        ck_assert_int_eq(b.dtype, NTC_DT_U8);
        ck_assert_int_eq(b.shape.rank, cases[c].rank);
        ck_assert_int_eq(ntc_array_numel(&b), cases[c].numel);
        ck_assert_mem_eq(b.data, bytes, (size_t)cases[c].numel);
        ntc_array_free(&b);
    }
}
END_TEST

/* The header follows NumPy's layout: data 64-byte aligned, '\n' before it. */
START_TEST(written_header_layout)
{
    float v[3] = {1, 2, 3};
    int64_t dims[] = {3};
    ntc_array a = {NTC_DT_F32, shape_of(1, dims), v};
    ntc_err err = {0};
    const char *path = tmp_path("h.npy");
    ck_assert_int_eq(ntc_npy_write(path, &a, &err), 0);
    size_t len;
    char *buf = ntc_read_file(path, &len, &err);
    ck_assert_ptr_nonnull(buf);
    ck_assert_int_eq(len % 64, 12);
    size_t hlen = (unsigned char)buf[8] | (size_t)(unsigned char)buf[9] << 8;
    ck_assert_int_eq((10 + hlen) % 64, 0);
    ck_assert_int_eq(buf[10 + hlen - 1], '\n');
    ck_assert_ptr_nonnull(strstr(buf + 10, "'descr': '<f4'"));
    ck_assert_ptr_nonnull(strstr(buf + 10, "'shape': (3,)"));
    ntc_free(buf);
}
END_TEST

/* NumPy itself reads what ntc writes (skipped without python3-numpy). */
START_TEST(numpy_reads_ours)
{
    if (access("/usr/bin/python3", X_OK) != 0 ||
        system("/usr/bin/python3 -c 'import numpy' 2>/dev/null") != 0) {
        printf("numpy_reads_ours: skipped, no /usr/bin/python3 with numpy\n");
        return;
    }
    float v[6] = {1.5f, -2, 3, 4, 5, 6.25f};
    int64_t dims[] = {3, 2};
    ntc_array a = {NTC_DT_F32, shape_of(2, dims), v};
    ntc_err err = {0};
    const char *path = tmp_path("np.npy");
    ck_assert_int_eq(ntc_npy_write(path, &a, &err), 0);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c \"import numpy as n, sys; x = n.load('%s'); "
             "sys.exit(0 if x.dtype == n.float32 and x.shape == (3, 2) and x[2, 1] == 6.25 "
             "and x.sum() == 17.75 else 1)\"", path);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

START_TEST(numpy_fixtures)
{
    const char *f32_files[] = {"f32_2x3.npy", "f32_2x3_v2.npy"};
    for (int f = 0; f < 2; f++) {
        ntc_array a;
        ntc_err err = {0};
        ck_assert_msg(ntc_npy_read(fixture(f32_files[f]), &a, &err) == 0, "%s", ntc_err_str(&err));
        ck_assert_int_eq(a.dtype, NTC_DT_F32);
        ck_assert_int_eq(a.shape.rank, 2);
        ck_assert_int_eq(a.shape.dims[0], 2);
        ck_assert_int_eq(a.shape.dims[1], 3);
        for (int k = 0; k < 6; k++)
            ck_assert_float_eq(((float *)a.data)[k], (float)k * 0.25f - 0.5f);
        ntc_array_free(&a);
    }
    ntc_array a;
    ntc_err err = {0};
    ck_assert_int_eq(ntc_npy_read(fixture("u8_5.npy"), &a, &err), 0);
    ck_assert_int_eq(a.dtype, NTC_DT_U8);
    ck_assert_int_eq(a.shape.dims[0], 5);
    for (int k = 0; k < 5; k++)
        ck_assert_int_eq(((uint8_t *)a.data)[k], (k * 37) % 256);
    ntc_array_free(&a);

    ck_assert_int_eq(ntc_npy_read(fixture("i64_labels.npy"), &a, &err), 0);
    ck_assert_int_eq(a.dtype, NTC_DT_I64);
    for (int k = 0; k < 6; k++)
        ck_assert_int_eq(((int64_t *)a.data)[k], k % 3);
    ntc_array_free(&a);
    ck_assert_int_eq(ntc_npy_read(fixture("i32_labels.npy"), &a, &err), 0);
    ck_assert_int_eq(a.dtype, NTC_DT_I32);
    for (int k = 0; k < 6; k++)
        ck_assert_int_eq(((int32_t *)a.data)[k], k % 3);
    ntc_array_free(&a);
}
END_TEST

/* Each refused file fails with a message that names the file and the reason. */
START_TEST(bad_files)
{
    struct { const char *file, *msg; } cases[] = {
        {"bad_fortran.npy", "Fortran-order arrays are not supported"},
        {"bad_f64.npy", "dtype float64 is not supported"},
        {"bad_bigendian.npy", "big-endian float32 data is not supported"},
        {"bad_truncated.npy", "truncated data: shape (2, 3) float32 needs 24 bytes, file has 19"},
        {"bad_magic.npy", "not a .npy file (bad magic"},
        {"bad_header.npy", "bad .npy header: expected ',' or ')' in shape"},
        {"idx_images", "not a .npy file"},
        {"no_such_file.npy", "cannot open: No such file or directory"},
        {".", "cannot read: Is a directory"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        ntc_array a;
        ntc_err err = {0};
        const char *path = fixture(cases[c].file);
        ck_assert_int_eq(ntc_npy_read(path, &a, &err), -1);
        ck_assert_ptr_null(a.data);
        ck_assert_msg(strstr(err.msg, cases[c].msg), "%s: got '%s'", cases[c].file, err.msg);
        ck_assert_str_eq(err.file, path);
    }
}
END_TEST

/* Header text that NumPy never writes but a hand-made file might. */
START_TEST(bad_headers_inline)
{
    struct { const char *dict, *msg; } cases[] = {
        {"{'descr': '<f4', 'shape': (2,), }", "no 'fortran_order' key"},
        {"{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2,), }", "must be True or False"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", "unknown key 'x'"},
        {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", "structured dtypes"},
        {"{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }", "dtype complex64"},
        {"{'descr': '<i2', 'fortran_order': False, 'shape': (2,), }", "dtype int16"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", "non-negative integers"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1), }", "more than 6"},
        {"['descr', '<f4']", "expected '{'"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char file[256];
        size_t hlen = strlen(cases[c].dict) + 1;
        memcpy(file, "\x93NUMPY\x01\x00", 8);
        file[8] = (char)hlen;
        file[9] = 0;
        memcpy(file + 10, cases[c].dict, hlen - 1);
        file[10 + hlen - 1] = '\n';
        memset(file + 10 + hlen, 0, 16);
        ntc_err err = {0};
        const char *path = tmp_path("bad.npy");
        ck_assert_int_eq(ntc_write_file_atomic(path, file, 10 + hlen + 8, &err), 0);
        ntc_array a;
        ck_assert_int_eq(ntc_npy_read(path, &a, &err), -1);
        ck_assert_msg(strstr(err.msg, cases[c].msg), "%s: got '%s'", cases[c].dict, err.msg);
    }
}
END_TEST

START_TEST(write_errors)
{
    float v = 1;
    ntc_array a = {NTC_DT_F32, {.rank = 1, .dims = {1}}, &v};
    ntc_err err = {0};
    ck_assert_int_eq(ntc_npy_write("/nonexistent-dir/x.npy", &a, &err), -1);
    ck_assert_ptr_nonnull(strstr(ntc_err_str(&err), "/nonexistent-dir/x.npy"));
    a.shape.dims[0] = -1;
    ck_assert_int_eq(ntc_npy_write(tmp_path("neg.npy"), &a, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "negative"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("npy");
    TCase *tc = tcase_create("npy");
    tcase_add_test(tc, roundtrip_f32);
    tcase_add_test(tc, roundtrip_u8_and_small_ranks);
    tcase_add_test(tc, written_header_layout);
    tcase_add_test(tc, numpy_reads_ours);
    tcase_add_test(tc, numpy_fixtures);
    tcase_add_test(tc, bad_files);
    tcase_add_test(tc, bad_headers_inline);
    tcase_add_test(tc, write_errors);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
