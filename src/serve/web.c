/* The server's web pages: GET / (chat), /arena, /leaderboard and their scripts and style under /static/,
 * served from the files of src/serve/web, embedded into the binary at build time (scripts/embed_web.cmake
 * writes serve_assets[]). Nothing is fetched from elsewhere, so the pages work offline; the CSP says so too.
 */
#include <stdio.h>
#include <string.h>

#include "serve/serve_internal.h"

static const serve_asset *find_asset(const char *name) {
    for (size_t i = 0; i < serve_n_assets; i++)
        if (!strcmp(serve_assets[i].name, name)) return &serve_assets[i];
    return NULL;
}

bool srv_page_for_path(const char *url, char *name, size_t cap) {
    static const struct {
        const char *path, *asset;
    } pages[] = {{"/", "index.html"},
                 {"/index.html", "index.html"},
                 {"/chat", "index.html"},
                 {"/arena", "arena.html"},
                 {"/leaderboard", "leaderboard.html"}};
    name[0] = 0;
    for (size_t i = 0; i < sizeof pages / sizeof *pages; i++) {
        if (!strcmp(url, pages[i].path)) {
            snprintf(name, cap, "%s", pages[i].asset);
            return true;
        }
    }
    static const char prefix[] = "/static/";
    if (strncmp(url, prefix, sizeof prefix - 1)) return false;
    const char *rest = url + sizeof prefix - 1;
    if (strchr(rest, '/') || strlen(rest) >= cap || !find_asset(rest)) return false;
    snprintf(name, cap, "%s", rest);
    return true;
}

static const char *content_type(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot) return "application/octet-stream";
    if (!strcmp(dot, ".html")) return "text/html; charset=utf-8";
    if (!strcmp(dot, ".js")) return "text/javascript; charset=utf-8";
    if (!strcmp(dot, ".css")) return "text/css; charset=utf-8";
    if (!strcmp(dot, ".svg")) return "image/svg+xml";
    return "application/octet-stream";
}

enum MHD_Result srv_page(cm_server *s, struct MHD_Connection *c, const char *name) {
    const serve_asset *a = find_asset(name);
    if (!a)
        return srv_reply_simple_error(s, c, ROUTE_PAGE, 404, "invalid_request_error", "not_found",
                                      "no page \"%s\"", name);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(a->size, (void *)a->data, MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", content_type(name));
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Content-Security-Policy",
                            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                            "connect-src 'self'; frame-ancestors 'none'");
    srv_keep_alive(s, resp);
    enum MHD_Result ret = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    srv_count_request(s, ROUTE_PAGE, 200);
    return ret;
}
