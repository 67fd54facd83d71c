/*
 * What native/relay.c and native/accept.c share: accept.c's listeners and dials
 * run on the relay's epoll thread (no cross-thread hand-off per connection) and
 * hand each connected pair to the relay there.
 */
#ifndef KUP_RELAY_H
#define KUP_RELAY_H
#include <node_api.h>
#include <stdint.h>

/* relay.c, relay thread: relay a connected pair (takes both fds and `initial`, a malloc'd block or NULL; efd still in epoll). */
void relay_adopt(uint64_t id, int cfd, int efd, char *initial, uint32_t len, uint32_t preamble, uint32_t group, uint32_t idle_ms);
int relay_epoll(void);
int64_t relay_now(void);
int relay_started(void);
/* relay.c, JS thread: run fn(arg) on the relay thread; count a connection that will report a close (+1) or never will (-1). */
void relay_call(void (*fn)(void *), void *arg);
void relay_hold(napi_env env, int delta);
/* relay.c: stops and joins the thread (idempotent). */
void relay_stop(void);

/* accept.c: epoll events tagged with bit 1 are its own; its timers; its exports. */
void accept_event(uint64_t tag, uint32_t events);
int accept_wait_ms(int dflt);
void accept_tick(void);
void accept_init(napi_env env, napi_value exports);
#endif
