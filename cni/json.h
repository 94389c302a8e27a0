/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A small, strict JSON reader for the plugin's stdin (RFC 8259): the whole
 * text is parsed into a fixed table of nodes that point into it, or refused
 * with the byte offset and what was expected. Bounded: input size, node
 * count and nesting depth. Strings are decoded on demand.
 */
#ifndef FQE_CNI_JSON_H
#define FQE_CNI_JSON_H

#include <stddef.h>

#define JSON_MAX_NODES 8192
#define JSON_MAX_DEPTH 64

enum json_type { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

struct json_node {
	enum json_type type;
	size_t start, end; /* the value's text: [start, end) */
	int child;	   /* arrays, objects: first element or member value; -1: none */
	int next;	   /* the next sibling; -1: none */
	int key;	   /* a member value: its key's string node; -1 otherwise */
};

struct json_doc {
	const char *text;
	size_t len;
	int count;
	struct json_node nodes[JSON_MAX_NODES];
	char error[160];
};

/* Parse text (len bytes); 0, or -1 with doc->error set. The root is node 0. */
int json_parse(struct json_doc *doc, const char *text, size_t len);
/* An object's member by key; -1 when absent or node is not an object. */
int json_get(const struct json_doc *doc, int node, const char *key);
/* A string node's decoded text into buf (NUL terminated); -1 if not a string or too long. */
int json_string(const struct json_doc *doc, int node, char *buf, size_t cap);
/* A member's string value; -1 when absent, not a string or too long. */
int json_get_string(const struct json_doc *doc, int node, const char *key, char *buf, size_t cap);

#endif
