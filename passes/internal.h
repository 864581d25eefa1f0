/* Internals of the passes module shared between its files. */
#ifndef NTC_PASSES_INTERNAL_H
#define NTC_PASSES_INTERNAL_H

#include "ntc/pass.h"

/* One KEY=VALUE option of a pipeline item (strings owned by the pipeline). */
typedef struct {
    const char *key, *value;
} ntc_pass_kv;

struct ntc_pass_ctx {
    const ntc_pass *pass;
    unsigned mode;
    int verbosity;
    FILE *out;
    const ntc_pass_kv *opts;
    int n_opts;
};

/* A loaded plugin: the file it came from and the dlopen handle. */
typedef struct {
    char *path;
    void *handle;
} ntc_plugin_handle;

typedef struct {
    const ntc_pass *pass;
    int plugin;                  /* index into plugins, -1 for a built-in pass */
} ntc_pass_entry;

struct ntc_pass_registry {
    ntc_pass_entry *entries;
    int n_entries, cap_entries;
    ntc_plugin_handle *plugins;
    int n_plugins, cap_plugins;
};

/* One pass of a pipeline, with its options and what its last run did. */
typedef struct {
    const ntc_pass *pass;
    ntc_pass_kv *opts;
    int n_opts;
    int runs;                    /* calls of run() in the last pipeline run */
    bool changed;
    double seconds;              /* wall time of those calls */
} ntc_pipeline_item;

struct ntc_pipeline {
    char *text;                  /* the pipeline text, split in place; options point into it */
    ntc_pipeline_item *items;
    int n_items;
    bool verified;               /* the last run verified after every pass */
    double verify_seconds;
};

/* Registers p as coming from plugin index `plugin` (-1: built-in). */
int ntc_pass_register_from(ntc_pass_registry *r, const ntc_pass *p, int plugin, ntc_err *err);
/* Unloads every plugin (registry.c calls it when the registry is freed). */
void ntc_plugins_unload(ntc_pass_registry *r);

#endif
