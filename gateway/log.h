/*
 * log.h - the error log: leveled lines on stderr (or a file).
 *
 * Knows nothing of requests or config. Callers pass the request id in the
 * message when there is one. Keys, secrets and prompt bodies are never
 * logged above GW_LOG_DEBUG.
 */
#ifndef GW_LOG_H
#define GW_LOG_H

enum gw_log_level { GW_LOG_DEBUG, GW_LOG_INFO, GW_LOG_WARN, GW_LOG_ERROR };

/* Lines below level are dropped. Default GW_LOG_INFO. */
void gw_log_set_level(enum gw_log_level level);

/* Writes one line: time, level, message. */
void gw_log(enum gw_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define gw_log_debug(...) gw_log(GW_LOG_DEBUG, __VA_ARGS__)
#define gw_log_info(...) gw_log(GW_LOG_INFO, __VA_ARGS__)
#define gw_log_warn(...) gw_log(GW_LOG_WARN, __VA_ARGS__)
#define gw_log_error(...) gw_log(GW_LOG_ERROR, __VA_ARGS__)

#endif
