/*
 * error.c - OpenAI-shaped error bodies and JSON string escaping.
 *
 * Messages may carry client-supplied text (a model name), so everything is
 * escaped and the result is always valid JSON, whatever bytes came in.
 */
#include "gateway/error.h"

#include <event2/buffer.h>
#include <string.h>

const char *gw_error_type(int status)
{
    switch (status) {
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 429:
        return "rate_limit_error";
    case 502:
    case 503:
    case 504:
        return "upstream_error";
    default:
        if (status >= 400 && status < 500)
            return "invalid_request_error";
        return "server_error";
    }
}

const char *gw_error_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return status < 400 ? "OK" : "Error";
    }
}

/* Length of the valid UTF-8 sequence at s, or 0 when it is not one. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t len, i;
    unsigned cp;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        len = 2, cp = s[0] & 0x1f;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        len = 3, cp = s[0] & 0x0f;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        len = 4, cp = s[0] & 0x07;
    else
        return 0;
    if (len > n)
        return 0;
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return len;
}

int gw_json_escape(struct evbuffer *out, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, run = 0, l;
    char esc[8];

    while (i < n) {
        unsigned char c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            i++, run++;
            continue;
        }
        if (c >= 0x80 && (l = utf8_len(s + i, n - i)) > 0) {
            i += l, run += l;
            continue;
        }
        if (run && evbuffer_add(out, s + i - run, run) < 0)
            return -1;
        run = 0;
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c;
            l = 2;
        } else if (c == '\n') {
            memcpy(esc, "\\n", 2), l = 2;
        } else if (c < 0x20) {
            static const char hex[] = "0123456789abcdef";
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4], esc[5] = hex[c & 15];
            l = 6;
        } else {
            memcpy(esc, "\\ufffd", 6), l = 6;
        }
        if (evbuffer_add(out, esc, l) < 0)
            return -1;
        i++;
    }
    if (run && evbuffer_add(out, s + n - run, run) < 0)
        return -1;
    return 0;
}

int gw_error_json(struct evbuffer *out, int status, const char *code,
                  const char *message)
{
    if (evbuffer_add(out, "{\"error\":{\"message\":\"", 21) < 0 ||
        gw_json_escape(out, message, strlen(message)) < 0 ||
        evbuffer_add_printf(out, "\",\"type\":\"%s\",\"code\":",
                            gw_error_type(status)) < 0)
        return -1;
    if (code == NULL)
        return evbuffer_add(out, "null}}", 6);
    if (evbuffer_add(out, "\"", 1) < 0 ||
        gw_json_escape(out, code, strlen(code)) < 0 ||
        evbuffer_add(out, "\"}}", 3) < 0)
        return -1;
    return 0;
}
