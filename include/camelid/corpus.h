/* Training text as documents, for `camelid train-tokenizer` and `camelid tokenize-corpus`.
 *
 * Two kinds of file:
 * - JSONL (a name ending in .jsonl or .ndjson): one document per line, the "text" string of a JSON object
 *   (other members are ignored; blank lines are skipped). A line that is not such an object is an error
 *   "FILE:LINE: problem".
 * - Plain text (any other name): split into documents at every occurrence of a separator (for example
 *   "<|endoftext|>", as TinyStories' and many pretraining dumps have it); the whitespace around each
 *   separator is not part of any document, and empty documents are skipped. Without a separator, or when the
 *   file does not contain it, the whole file is one document, byte for byte. */
#ifndef CAMELID_CORPUS_H
#define CAMELID_CORPUS_H

#include <stdbool.h>
#include <stddef.h>

#include "camelid/status.h"

/* Called once per document with its bytes (not NUL-terminated; valid only during the call). Returning an
 * error stops the reading and is passed back. */
typedef cm_status (*cm_corpus_doc_fn)(void *user, const char *text, size_t len);

/* Is `path` read as JSONL? */
bool cm_corpus_is_jsonl(const char *path);
/* Every document of the file at `path` (memory-mapped), in order. `sep` NULL or "": no splitting. */
cm_status cm_corpus_read(const char *path, const char *sep, cm_corpus_doc_fn fn, void *user);
/* The same over buffers; `name` is used in errors. Drive the fuzz target. */
cm_status cm_corpus_parse_jsonl(const char *data, size_t len, const char *name, cm_corpus_doc_fn fn,
                                void *user);
cm_status cm_corpus_split_text(const char *data, size_t len, const char *sep, cm_corpus_doc_fn fn, void *user);

#endif
