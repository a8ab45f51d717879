/* camelid eval-report: compare the runs kept in an evaluation store. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/eval_store.h"
#include "camelid/file.h"
#include "commands.h"

static const char *help =
    "usage: camelid eval-report [--store DB] [--html FILE]\n"
    "\n"
    "Print a table comparing every run in an evaluation store (runs as columns, task and\n"
    "metric as rows) and optionally write an HTML report with inline SVG bar charts.\n"
    "\n"
    "options:\n"
    "  --store DB              the store camelid eval wrote (default camelid.db)\n"
    "  --html FILE             also write the HTML report to FILE\n"
    "  -t, --threads N         accepted for uniformity (unused)\n"
    "  -h, --help              this help\n";

int cmd_eval_report(int argc, char **argv) {
    const char *store = "camelid.db", *html_path = NULL;
    int threads = 1;
    arg_spec specs[] = {
        {"store", 0, ARG_STRING, &store, NULL},
        {"html", 0, ARG_STRING, &html_path, NULL},
    };
    const char *pos[1];
    int rc = cli_parse_fixed(argc, argv, specs, sizeof specs / sizeof *specs, help, &threads, pos, 1);
    const char *extra = pos[0];
    if (rc != 0) return rc < 0 ? 1 : 0;
    if (extra) return cli_fail("eval-report takes no positional argument, got \"%s\"", extra);
    char *text = NULL;
    if (cm_eval_report_text(store, &text) != CM_OK) return cli_fail_status();
    fputs(text, stdout);
    free(text);
    if (html_path) {
        char *html = NULL;
        if (cm_eval_report_html(store, &html) != CM_OK) return cli_fail_status();
        cm_status st = cm_write_file_atomic(html_path, html, strlen(html));
        free(html);
        if (st != CM_OK) return cli_fail_status();
        fprintf(stderr, "camelid: wrote %s\n", html_path);
    }
    if (fflush(stdout) != 0 || ferror(stdout)) return cli_fail("stdout: write failed");
    return 0;
}
