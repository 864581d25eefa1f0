/* Pass plugins: shared objects exporting ntc_pass_plugin_info (see the
 * NTC_PASS_PLUGIN macro), loaded with dlopen.
 *
 * RTLD_NOW makes a plugin with an unresolved symbol fail here, with the
 * symbol's name, instead of in the middle of a pipeline.  RTLD_LOCAL keeps
 * one plugin's symbols from satisfying another's; plugins resolve libntc's
 * own functions from the host process, so they need not link -lntc. */
#include "internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* A path without '/' would make dlopen search the library path; a user who
 * writes `--load-pass my.so` means the file in the current directory. */
static char *dlopen_path(const char *path)
{
    const char *prefix = strchr(path, '/') ? "" : "./";
    size_t n = strlen(prefix) + strlen(path) + 1;
    char *p = ntc_malloc(n);
    if (p)
        snprintf(p, n, "%s%s", prefix, path);
    return p;
}

static int check_info(const ntc_pass_plugin *info, const char *path, ntc_err *err)
{
    if (info->api_version != NTC_PASS_API_VERSION)
        return ntc_error(err, path, 0,
                         "pass plugin was built for pass API version %d, but this ntc implements "
                         "version %d; rebuild it against this ntc's headers (pkg-config --cflags ntc)",
                         info->api_version, NTC_PASS_API_VERSION);
    if (info->layout != NTC_PASS_LAYOUT)
        return ntc_error(err, path, 0,
                         "pass plugin was built against ntc headers with other IR structures or "
                         "another ops table than this ntc's (both say API version %d); rebuild it "
                         "against this ntc's headers",
                         NTC_PASS_API_VERSION);
    if (!info->passes || !info->passes[0])
        return ntc_error(err, path, 0, "pass plugin declares no passes");
    return 0;
}

int ntc_pass_load_plugin(ntc_pass_registry *r, const char *path, ntc_err *err)
{
    struct stat st;
    if (stat(path, &st))
        return ntc_error(err, path, 0, "cannot load pass plugin: %s", strerror(errno));
    if (ntc_grow((void **)&r->plugins, &r->cap_plugins, r->n_plugins + 1, sizeof *r->plugins))
        return ntc_error(err, path, 0, "out of memory");
    char *full = dlopen_path(path);
    char *name = ntc_strdup(path);
    if (!full || !name) {
        ntc_free(full);
        ntc_free(name);
        return ntc_error(err, path, 0, "out of memory");
    }
    void *h = dlopen(full, RTLD_NOW | RTLD_LOCAL);
    ntc_free(full);
    if (!h) {
        ntc_free(name);
        return ntc_error(err, path, 0, "cannot load pass plugin: %s", dlerror());
    }
    const ntc_pass_plugin *info = dlsym(h, NTC_PASS_PLUGIN_SYMBOL);
    if (!info) {
        ntc_error(err, path, 0, "not an ntc pass plugin: it defines no '%s' (declare its passes "
                  "with NTC_PASS_PLUGIN(...) from ntc/pass.h)", NTC_PASS_PLUGIN_SYMBOL);
        goto fail;
    }
    if (check_info(info, path, err))
        goto fail;
    int index = r->n_plugins, first = r->n_entries;
    r->plugins[index].path = name;
    r->plugins[index].handle = h;
    r->n_plugins++;
    for (const ntc_pass *const *p = info->passes; *p; p++) {
        ntc_err e = {0};
        if (ntc_pass_register_from(r, *p, index, &e)) {
            /* All or nothing: the plugin's passes leave with it. */
            r->n_entries = first;
            r->n_plugins--;
            ntc_error(err, path, 0, "%s", e.msg);
            goto fail;
        }
    }
    return r->n_entries - first;
fail:
    ntc_free(name);
    dlclose(h);
    return -1;
}

void ntc_plugins_unload(ntc_pass_registry *r)
{
    for (int i = 0; i < r->n_plugins; i++) {
        dlclose(r->plugins[i].handle);
        ntc_free(r->plugins[i].path);
    }
    ntc_free(r->plugins);
    r->plugins = NULL;
    r->n_plugins = 0;
}
