// SPDX-License-Identifier: Apache-2.0
/* The plugin's JSON reader: see json.h. */
#include "json.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

struct parser {
	struct json_doc *doc;
	size_t pos;
	int depth;
};

static int fail(struct parser *p, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(p->doc->error, sizeof(p->doc->error), "invalid JSON at byte %zu: ", p->pos);

	va_start(ap, fmt);
	if (n > 0 && (size_t)n < sizeof(p->doc->error))
		vsnprintf(p->doc->error + n, sizeof(p->doc->error) - (size_t)n, fmt, ap);
	va_end(ap);
	return -1;
}

static void skip_ws(struct parser *p)
{
	const char *t = p->doc->text;

	while (p->pos < p->doc->len &&
	       (t[p->pos] == ' ' || t[p->pos] == '\t' || t[p->pos] == '\n' || t[p->pos] == '\r'))
		p->pos++;
}

static int peek(struct parser *p)
{
	return p->pos < p->doc->len ? (unsigned char)p->doc->text[p->pos] : -1;
}

static int new_node(struct parser *p, enum json_type type)
{
	struct json_doc *d = p->doc;

	if (d->count >= JSON_MAX_NODES)
		return fail(p, "more than %d values", JSON_MAX_NODES);
	d->nodes[d->count] = (struct json_node){ .type = type, .start = p->pos, .child = -1, .next = -1, .key = -1 };
	return d->count++;
}

static int hex4(const char *s, unsigned *out)
{
	unsigned v = 0;

	for (int i = 0; i < 4; i++) {
		char c = s[i];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (unsigned)(c - 'A' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

static int parse_string(struct parser *p)
{
	const char *t = p->doc->text;
	int n = new_node(p, JSON_STRING);

	if (n < 0)
		return -1;
	p->pos++; /* the opening quote */
	while (p->pos < p->doc->len) {
		unsigned char c = (unsigned char)t[p->pos];
		unsigned u;

		if (c == '"') {
			p->pos++;
			p->doc->nodes[n].end = p->pos;
			return n;
		}
		if (c < 0x20)
			return fail(p, "control character in a string");
		if (c == '\\') {
			if (p->pos + 1 >= p->doc->len)
				break;
			c = (unsigned char)t[p->pos + 1];
			if (c == 'u') {
				if (p->pos + 6 > p->doc->len || hex4(t + p->pos + 2, &u) < 0)
					return fail(p, "bad \\u escape");
				p->pos += 6;
				continue;
			}
			if (!strchr("\"\\/bfnrt", c))
				return fail(p, "bad escape \\%c", c);
			p->pos += 2;
			continue;
		}
		p->pos++;
	}
	return fail(p, "unterminated string");
}

static int parse_number(struct parser *p)
{
	const char *t = p->doc->text;
	size_t len = p->doc->len;
	int n = new_node(p, JSON_NUMBER);
	size_t digits;

	if (n < 0)
		return -1;
	if (peek(p) == '-')
		p->pos++;
	if (peek(p) == '0') {
		p->pos++;
	} else {
		for (digits = 0; p->pos < len && t[p->pos] >= '0' && t[p->pos] <= '9'; digits++)
			p->pos++;
		if (!digits)
			return fail(p, "expected a digit");
	}
	if (peek(p) == '.') {
		p->pos++;
		for (digits = 0; p->pos < len && t[p->pos] >= '0' && t[p->pos] <= '9'; digits++)
			p->pos++;
		if (!digits)
			return fail(p, "expected a digit after '.'");
	}
	if (peek(p) == 'e' || peek(p) == 'E') {
		p->pos++;
		if (peek(p) == '+' || peek(p) == '-')
			p->pos++;
		for (digits = 0; p->pos < len && t[p->pos] >= '0' && t[p->pos] <= '9'; digits++)
			p->pos++;
		if (!digits)
			return fail(p, "expected a digit in the exponent");
	}
	p->doc->nodes[n].end = p->pos;
	return n;
}

static int parse_literal(struct parser *p, const char *word, enum json_type type)
{
	size_t l = strlen(word);
	int n;

	if (p->doc->len - p->pos < l || memcmp(p->doc->text + p->pos, word, l) != 0)
		return fail(p, "unexpected character");
	n = new_node(p, type);
	if (n < 0)
		return -1;
	p->pos += l;
	p->doc->nodes[n].end = p->pos;
	return n;
}

static int parse_value(struct parser *p);

/* Arrays and objects: elements (or key: value members) separated by commas. */
static int parse_container(struct parser *p, enum json_type type)
{
	char close = type == JSON_ARRAY ? ']' : '}';
	int n = new_node(p, type), last = -1;

	if (n < 0)
		return -1;
	if (++p->depth > JSON_MAX_DEPTH)
		return fail(p, "nested deeper than %d", JSON_MAX_DEPTH);
	p->pos++;
	skip_ws(p);
	if (peek(p) == close) {
		p->pos++;
		goto done;
	}
	for (;;) {
		int key = -1, v;

		skip_ws(p);
		if (type == JSON_OBJECT) {
			if (peek(p) != '"')
				return fail(p, "expected a member name");
			key = parse_string(p);
			if (key < 0)
				return -1;
			skip_ws(p);
			if (peek(p) != ':')
				return fail(p, "expected ':'");
			p->pos++;
		}
		v = parse_value(p);
		if (v < 0)
			return -1;
		p->doc->nodes[v].key = key;
		if (last < 0)
			p->doc->nodes[n].child = v;
		else
			p->doc->nodes[last].next = v;
		last = v;
		skip_ws(p);
		if (peek(p) == ',') {
			p->pos++;
			continue;
		}
		if (peek(p) == close) {
			p->pos++;
			break;
		}
		return fail(p, "expected ',' or '%c'", close);
	}
done:
	p->depth--;
	p->doc->nodes[n].end = p->pos;
	return n;
}

static int parse_value(struct parser *p)
{
	skip_ws(p);
	switch (peek(p)) {
	case -1:
		return fail(p, "unexpected end of input");
	case '{':
		return parse_container(p, JSON_OBJECT);
	case '[':
		return parse_container(p, JSON_ARRAY);
	case '"':
		return parse_string(p);
	case 't':
		return parse_literal(p, "true", JSON_BOOL);
	case 'f':
		return parse_literal(p, "false", JSON_BOOL);
	case 'n':
		return parse_literal(p, "null", JSON_NULL);
	default:
		if (peek(p) == '-' || (peek(p) >= '0' && peek(p) <= '9'))
			return parse_number(p);
		return fail(p, "unexpected character");
	}
}

int json_parse(struct json_doc *doc, const char *text, size_t len)
{
	struct parser p = { .doc = doc };

	doc->text = text;
	doc->len = len;
	doc->count = 0;
	doc->error[0] = 0;
	if (memchr(text, 0, len))
		return fail(&p, "NUL byte in the input");
	if (parse_value(&p) < 0)
		return -1;
	skip_ws(&p);
	if (p.pos != len)
		return fail(&p, "text after the value");
	return 0;
}

static void put_utf8(char *buf, size_t *o, unsigned cp)
{
	if (cp < 0x80) {
		buf[(*o)++] = (char)cp;
	} else if (cp < 0x800) {
		buf[(*o)++] = (char)(0xc0 | (cp >> 6));
		buf[(*o)++] = (char)(0x80 | (cp & 0x3f));
	} else if (cp < 0x10000) {
		buf[(*o)++] = (char)(0xe0 | (cp >> 12));
		buf[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
		buf[(*o)++] = (char)(0x80 | (cp & 0x3f));
	} else {
		buf[(*o)++] = (char)(0xf0 | (cp >> 18));
		buf[(*o)++] = (char)(0x80 | ((cp >> 12) & 0x3f));
		buf[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
		buf[(*o)++] = (char)(0x80 | (cp & 0x3f));
	}
}

int json_string(const struct json_doc *doc, int node, char *buf, size_t cap)
{
	const struct json_node *n;
	size_t i, o = 0;

	if (node < 0 || node >= doc->count || doc->nodes[node].type != JSON_STRING || cap == 0)
		return -1;
	n = &doc->nodes[node];
	for (i = n->start + 1; i + 1 < n->end; i++) {
		char c = doc->text[i];
		unsigned cp, lo;

		if (o + 5 > cap)
			return -1;
		if (c != '\\') {
			buf[o++] = c;
			continue;
		}
		c = doc->text[++i];
		switch (c) {
		case 'b':
			buf[o++] = '\b';
			break;
		case 'f':
			buf[o++] = '\f';
			break;
		case 'n':
			buf[o++] = '\n';
			break;
		case 'r':
			buf[o++] = '\r';
			break;
		case 't':
			buf[o++] = '\t';
			break;
		case 'u':
			hex4(doc->text + i + 1, &cp);
			i += 4;
			if (cp >= 0xd800 && cp < 0xdc00 && i + 6 < n->end && doc->text[i + 1] == '\\' &&
			    doc->text[i + 2] == 'u' && hex4(doc->text + i + 3, &lo) == 0 && lo >= 0xdc00 &&
			    lo < 0xe000) {
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				i += 6;
			}
			if (cp == 0)
				return -1; /* no NUL inside a C string */
			put_utf8(buf, &o, cp);
			break;
		default:
			buf[o++] = c;
		}
	}
	if (o >= cap)
		return -1;
	buf[o] = 0;
	return (int)o;
}

int json_get(const struct json_doc *doc, int node, const char *key)
{
	char name[128];

	if (node < 0 || node >= doc->count || doc->nodes[node].type != JSON_OBJECT)
		return -1;
	for (int c = doc->nodes[node].child; c >= 0; c = doc->nodes[c].next)
		if (json_string(doc, doc->nodes[c].key, name, sizeof(name)) >= 0 && strcmp(name, key) == 0)
			return c;
	return -1;
}

int json_get_string(const struct json_doc *doc, int node, const char *key, char *buf, size_t cap)
{
	return json_string(doc, json_get(doc, node, key), buf, cap);
}
