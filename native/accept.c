/*
 * Native accept and dial for the relay thread, with every pick made in
 * TypeScript (Linux only).
 *
 * A listener JS bound with net.Server is duplicated here and watched by the
 * relay's epoll thread (JS then closes its own copy, so Node stops accepting).
 * The thread accepts in bursts and reports each burst to JS in one threadsafe
 * call; JS picks an endpoint for each (its balancer, per family, affinity) and
 * answers with dial or reset commands, queued and sent to the thread together
 * (flush). The thread connects without blocking; a connected pair goes straight
 * to the relay on the same thread; a failed or timed-out dial is reported back
 * and JS decides what is next (another endpoint, or a reset): retry policy stays
 * in TypeScript.
 *
 * Descriptor ownership: accepted and dialled descriptors belong to the thread
 * until relay_adopt() takes them, or a reset/abort closes them. JS never sees
 * them. Connections are named by a slot number plus a generation, so a command
 * for a connection the thread already gave up on (aborted) is ignored.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include "relay.h"

#define ACCEPT_BURST 64
#define PAUSE_MS 100

/* Event kinds reported to JS (keep in step with native-accept.ts). */
enum ev_kind { EV_ACCEPTED = 0, EV_DIAL_FAILED = 1, EV_CONNECTED = 2, EV_ABORTED = 3, EV_ACCEPT_ERROR = 4, EV_UNLISTENED = 5 };

enum obj_kind { OBJ_LISTENER = 1, OBJ_CONN = 2 };

struct lst {
  int kind; /* OBJ_LISTENER: first, as in struct pend */
  uint32_t id, group;
  int fd;
  int want_local; /* getsockname each accepted connection (PROXY header) */
  int64_t paused_until;
  struct lst *next;
};

struct pend {
  int kind;
  uint64_t id;
  uint32_t slot, listener, group;
  int cfd, efd;
  int64_t deadline; /* dialling until; 0 = waiting for JS */
  /* the dial JS asked for */
  uint64_t relay_id;
  char *initial;
  uint32_t len, preamble, idle_ms;
  int want_success;
  struct pend *prev, *next; /* dialling list */
};

struct ev {
  int kind;
  int err;
  uint64_t id;
  uint32_t listener;
  int fam;
  uint16_t peer_port, local_port;
  char peer[INET6_ADDRSTRLEN], local[INET6_ADDRSTRLEN];
};

enum cmd_kind { C_LISTEN, C_UNLISTEN, C_WANT_LOCAL, C_DIAL, C_RESET, C_ABORT };
struct cmd {
  enum cmd_kind kind;
  uint64_t id; /* connection, or listener */
  uint32_t group;
  int fd, flag;
  struct sockaddr_storage sa;
  socklen_t salen;
  uint32_t timeout_ms;
  uint64_t relay_id;
  char *initial;
  uint32_t len, preamble, idle_ms;
  /* C_UNLISTEN: connections the JS thread took from the backlog before the shutdown */
  int *fds;
  struct sockaddr_storage *sas;
  uint32_t nfds;
};

struct batch {
  struct cmd *cmds;
  size_t n;
};

static struct {
  /* relay thread */
  struct lst *lsts;
  struct pend **slots;
  uint32_t nslots, *free_slots, nfree;
  uint32_t gen;
  struct pend *dialling;
  int paused; /* listeners paused after EMFILE */
  /* Freed after the current batch of events, which may still name them. */
  struct pend *dead;
  struct lst *dead_lsts;
  /* reports: thread -> JS */
  pthread_mutex_t mu;
  struct ev *evs;
  size_t nevs, capevs;
  napi_threadsafe_function tsfn;
  int started;
  /* JS thread: commands not yet flushed; each open listener's descriptor (for unlisten's shutdown) */
  struct jsl { uint32_t id; int fd; struct jsl *next; } *jsl;
  struct cmd *q;
  size_t nq, capq;
  int refs;
} A;

/* ---- reports ---------------------------------------------------------- */
static struct ev *new_ev(void) {
  if (A.nevs == A.capevs) {
    size_t cap = A.capevs ? A.capevs * 2 : 64;
    struct ev *n = realloc(A.evs, cap * sizeof *n);
    if (!n) abort();
    A.evs = n;
    A.capevs = cap;
  }
  struct ev *e = &A.evs[A.nevs++];
  memset(e, 0, offsetof(struct ev, peer));
  e->peer[0] = e->local[0] = 0;
  return e;
}

/* Called with A.mu held, after filling an event: one JS call per batch. */
static void sent(void) {
  int first = A.nevs == 1;
  pthread_mutex_unlock(&A.mu);
  if (first) napi_call_threadsafe_function(A.tsfn, NULL, napi_tsfn_nonblocking);
}

static void report(int kind, uint64_t id, uint32_t listener, int err) {
  pthread_mutex_lock(&A.mu);
  struct ev *e = new_ev();
  e->kind = kind;
  e->id = id;
  e->listener = listener;
  e->err = err;
  sent();
}

/* ---- connections -------------------------------------------------------- */
static struct pend *lookup(uint64_t id) {
  uint32_t slot = (uint32_t)(id & 0xffffff);
  if (slot >= A.nslots) return NULL;
  struct pend *p = A.slots[slot];
  return p && p->id == id ? p : NULL;
}

static struct pend *new_pend(struct lst *l, int cfd) {
  uint32_t slot;
  if (A.nfree) {
    slot = A.free_slots[--A.nfree];
  } else {
    if (A.nslots == 0xffffff) return NULL;
    size_t cap = A.nslots + 1;
    struct pend **s = realloc(A.slots, cap * sizeof *s);
    uint32_t *f = realloc(A.free_slots, cap * sizeof *f);
    if (!s || !f) abort();
    A.slots = s;
    A.free_slots = f;
    slot = A.nslots++;
  }
  struct pend *p = calloc(1, sizeof *p);
  if (!p) abort();
  p->kind = OBJ_CONN;
  p->slot = slot;
  /* Generation in the high bits: JS numbers are exact to 2^53. */
  A.gen = (A.gen + 1) & 0x1fffffff;
  p->id = ((uint64_t)A.gen << 24) | slot;
  p->listener = l->id;
  p->group = l->group;
  p->cfd = cfd;
  p->efd = -1;
  A.slots[slot] = p;
  return p;
}

static void unlink_dial(struct pend *p) {
  if (!p->deadline) return;
  if (p->prev) p->prev->next = p->next; else A.dialling = p->next;
  if (p->next) p->next->prev = p->prev;
  p->prev = p->next = NULL;
  p->deadline = 0;
}

static void close_endpoint(struct pend *p) {
  unlink_dial(p);
  if (p->efd >= 0) {
    epoll_ctl(relay_epoll(), EPOLL_CTL_DEL, p->efd, NULL);
    close(p->efd);
    p->efd = -1;
  }
}

static void free_pend(struct pend *p) {
  close_endpoint(p);
  A.slots[p->slot] = NULL;
  A.free_slots[A.nfree++] = p->slot;
  free(p->initial);
  p->initial = NULL;
  p->kind = 0;
  p->next = A.dead;
  A.dead = p;
}

/* The client gets a reset (as Node's resetAndDestroy): it was refused, shed, or every dial failed. */
static void reset_client(struct pend *p) {
  if (p->cfd >= 0) {
    struct linger lg = {1, 0};
    setsockopt(p->cfd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(p->cfd);
    p->cfd = -1;
  }
  free_pend(p);
}

static void dial_failed(struct pend *p, int err) {
  close_endpoint(p);
  free(p->initial);
  p->initial = NULL;
  report(EV_DIAL_FAILED, p->id, p->listener, err);
}

static void dial_done(struct pend *p) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(p->efd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
  if (err) {
    dial_failed(p, err);
    return;
  }
  unlink_dial(p);
  /* Still registered: the relay re-aims the registration at its connection (one epoll_ctl, not two). */
  if (p->want_success) report(EV_CONNECTED, p->id, p->listener, 0);
  relay_adopt(p->relay_id, p->cfd, p->efd, p->initial, p->len, p->preamble, p->group, p->idle_ms);
  p->cfd = p->efd = -1;
  p->initial = NULL;
  free_pend(p);
}

static void dial(struct pend *p, struct cmd *c) {
  close_endpoint(p);
  free(p->initial);
  p->initial = c->initial;
  c->initial = NULL;
  p->len = c->len;
  p->preamble = c->preamble;
  p->idle_ms = c->idle_ms;
  p->relay_id = c->relay_id;
  p->want_success = c->flag;
  int fd = socket(c->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    dial_failed(p, errno);
    return;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  p->efd = fd;
  if (connect(fd, (struct sockaddr *)&c->sa, c->salen) == 0) {
    struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = (uint64_t)(uintptr_t)p | 2};
    epoll_ctl(relay_epoll(), EPOLL_CTL_ADD, fd, &ev);
    dial_done(p);
    return;
  }
  if (errno != EINPROGRESS) {
    int err = errno;
    close(fd);
    p->efd = -1;
    dial_failed(p, err);
    return;
  }
  struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = (uint64_t)(uintptr_t)p | 2};
  epoll_ctl(relay_epoll(), EPOLL_CTL_ADD, fd, &ev);
  p->deadline = relay_now() + c->timeout_ms;
  p->prev = NULL;
  p->next = A.dialling;
  if (A.dialling) A.dialling->prev = p;
  A.dialling = p;
}

/* ---- listeners ----------------------------------------------------------- */
static void set_listening(struct lst *l, int on) {
  struct epoll_event ev = {.events = on ? EPOLLIN : 0, .data.u64 = (uint64_t)(uintptr_t)l | 2};
  epoll_ctl(relay_epoll(), EPOLL_CTL_MOD, l->fd, &ev);
}

static void text_of(const struct sockaddr_storage *sa, char *out, uint16_t *port, int *fam) {
  if (sa->ss_family == AF_INET) {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &s4->sin_addr, out, INET6_ADDRSTRLEN);
    *port = ntohs(s4->sin_port);
    if (fam) *fam = 4;
  } else {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &s6->sin6_addr, out, INET6_ADDRSTRLEN);
    *port = ntohs(s6->sin6_port);
    /* As socketAddressFamily(): a v4-mapped peer is an IPv4 client. */
    if (fam) *fam = IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr) ? 4 : 6;
  }
}

static void took(struct lst *l, int fd, const struct sockaddr_storage *sa);

static void on_accept(struct lst *l) {
  for (int k = 0; k < ACCEPT_BURST; k++) {
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    int fd = accept4(l->fd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EAGAIN) return;
      if (errno == EINVAL) {
        /* Shut down by unlisten (JS thread); closed when its command arrives. */
        set_listening(l, 0);
        return;
      }
      /* Out of descriptors or memory: counted once, and the listener rests
       * a moment (the clients wait in the backlog) instead of spinning. */
      int err = errno;
      set_listening(l, 0);
      l->paused_until = relay_now() + PAUSE_MS;
      A.paused = 1;
      report(EV_ACCEPT_ERROR, 0, l->id, err);
      return;
    }
    took(l, fd, &sa);
  }
}

/* One accepted connection: a slot, and an event for JS to pick for. */
static void took(struct lst *l, int fd, const struct sockaddr_storage *sa_in) {
  const struct sockaddr_storage sa = *sa_in;
  {
    struct pend *p = new_pend(l, fd);
    if (!p) {
      close(fd);
      return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    pthread_mutex_lock(&A.mu);
    struct ev *e = new_ev();
    e->kind = EV_ACCEPTED;
    e->id = p->id;
    e->listener = l->id;
    text_of(&sa, e->peer, &e->peer_port, &e->fam);
    if (__atomic_load_n(&l->want_local, __ATOMIC_RELAXED)) {
      struct sockaddr_storage la;
      socklen_t ll = sizeof la;
      if (getsockname(fd, (struct sockaddr *)&la, &ll) == 0) text_of(&la, e->local, &e->local_port, NULL);
    }
    sent();
  }
}

static struct lst *find_lst(uint32_t id, struct lst ***where) {
  for (struct lst **pp = &A.lsts; *pp; pp = &(*pp)->next) {
    if ((*pp)->id == id) {
      if (where) *where = pp;
      return *pp;
    }
  }
  return NULL;
}

/* ---- the relay thread's hooks ------------------------------------------- */
void accept_event(uint64_t tag, uint32_t events) {
  int *kind = (int *)(uintptr_t)(tag & ~(uint64_t)3);
  if (*kind == 0) return; /* closed earlier in this batch */
  if (*kind == OBJ_LISTENER) {
    on_accept((struct lst *)kind);
    return;
  }
  struct pend *p = (struct pend *)kind;
  if (p->efd < 0 || !p->deadline) return;
  if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) dial_done(p);
}

int accept_wait_ms(int dflt) {
  int64_t now = relay_now();
  int64_t w = dflt;
  for (struct pend *p = A.dialling; p; p = p->next) {
    int64_t left = p->deadline - now;
    if (left < w) w = left < 0 ? 0 : left;
  }
  if (A.paused && w > PAUSE_MS) w = PAUSE_MS;
  return (int)w;
}

void accept_tick(void) {
  int64_t now = relay_now();
  while (A.dead) {
    struct pend *p = A.dead;
    A.dead = p->next;
    free(p);
  }
  while (A.dead_lsts) {
    struct lst *l = A.dead_lsts;
    A.dead_lsts = l->next;
    free(l);
  }
  for (struct pend *p = A.dialling, *n; p; p = n) {
    n = p->next;
    if (now >= p->deadline) dial_failed(p, ETIMEDOUT);
  }
  if (!A.paused) return;
  A.paused = 0;
  for (struct lst *l = A.lsts; l; l = l->next) {
    if (!l->paused_until) continue;
    if (now >= l->paused_until) {
      l->paused_until = 0;
      set_listening(l, 1);
    } else {
      A.paused = 1;
    }
  }
}

static void run_batch(void *arg) {
  struct batch *b = arg;
  for (size_t i = 0; i < b->n; i++) {
    struct cmd *c = &b->cmds[i];
    switch (c->kind) {
      case C_LISTEN: {
        struct lst *l = calloc(1, sizeof *l);
        if (!l) abort();
        l->kind = OBJ_LISTENER;
        l->id = (uint32_t)c->id;
        l->group = c->group;
        l->fd = c->fd;
        l->want_local = c->flag;
        l->next = A.lsts;
        A.lsts = l;
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)(uintptr_t)l | 2};
        epoll_ctl(relay_epoll(), EPOLL_CTL_ADD, l->fd, &ev);
        break;
      }
      case C_UNLISTEN: {
        struct lst **where;
        struct lst *l = find_lst((uint32_t)c->id, &where);
        if (!l) {
          for (uint32_t k = 0; k < c->nfds; k++) close(c->fds[k]);
        } else {
          for (uint32_t k = 0; k < c->nfds; k++) took(l, c->fds[k], &c->sas[k]);
        }
        free(c->fds);
        free(c->sas);
        if (!l) break;
        *where = l->next;
        epoll_ctl(relay_epoll(), EPOLL_CTL_DEL, l->fd, NULL);
        close(l->fd);
        l->kind = 0;
        l->next = A.dead_lsts;
        A.dead_lsts = l;
        /* After every connection it accepted was reported: JS may forget it once they are over. */
        report(EV_UNLISTENED, 0, (uint32_t)c->id, 0);
        break;
      }
      case C_WANT_LOCAL: {
        struct lst *l = find_lst((uint32_t)c->id, NULL);
        if (l) __atomic_store_n(&l->want_local, c->flag, __ATOMIC_RELAXED);
        break;
      }
      case C_DIAL: {
        struct pend *p = lookup(c->id);
        if (p) dial(p, c);
        break;
      }
      case C_RESET: {
        struct pend *p = lookup(c->id);
        if (p) reset_client(p);
        break;
      }
      case C_ABORT:
        for (uint32_t s = 0; s < A.nslots; s++) {
          struct pend *p = A.slots[s];
          if (!p || p->group != c->group) continue;
          uint64_t id = p->id;
          uint32_t listener = p->listener;
          reset_client(p);
          report(EV_ABORTED, id, listener, 0);
        }
        break;
    }
    free(c->initial);
  }
  free(b->cmds);
  free(b);
}

/* ---- N-API: the JS thread's side ----------------------------------------- */
static void deliver(napi_env env, napi_value cb, void *ctx, void *data) {
  (void)ctx;
  (void)data;
  if (env == NULL || cb == NULL) return;
  pthread_mutex_lock(&A.mu);
  struct ev *evs = A.evs;
  size_t n = A.nevs;
  A.evs = NULL;
  A.nevs = A.capevs = 0;
  pthread_mutex_unlock(&A.mu);
  if (n == 0) return;
  /* Numbers in one Float64Array (8 per event); addresses in one Buffer as
   * text (2 x 46 bytes per event), read by JS only where a pick or a PROXY
   * header needs them. */
  napi_value ab, nums, texts, undef, argv[2];
  double *f;
  char *t;
  /* These fail while Node tears the environment down (the calls still come): nothing to tell then. */
  if (napi_create_arraybuffer(env, n * 8 * sizeof(double), (void **)&f, &ab) != napi_ok ||
      napi_create_typedarray(env, napi_float64_array, n * 8, ab, 0, &nums) != napi_ok ||
      napi_create_buffer(env, n * 2 * INET6_ADDRSTRLEN, (void **)&t, &texts) != napi_ok) {
    free(evs);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    struct ev *e = &evs[i];
    double *r = f + i * 8;
    r[0] = e->kind;
    r[1] = (double)e->id;
    r[2] = e->listener;
    r[3] = e->err;
    r[4] = e->fam;
    r[5] = e->peer_port;
    r[6] = e->local[0] ? e->local_port : -1;
    r[7] = 0;
    memcpy(t + i * 2 * INET6_ADDRSTRLEN, e->peer, INET6_ADDRSTRLEN);
    memcpy(t + i * 2 * INET6_ADDRSTRLEN + INET6_ADDRSTRLEN, e->local, INET6_ADDRSTRLEN);
  }
  free(evs);
  napi_get_undefined(env, &undef);
  argv[0] = nums;
  argv[1] = texts;
  napi_call_function(env, undef, cb, 2, argv, NULL);
}

#define CHECK(call)                                              \
  do {                                                           \
    if ((call) != napi_ok) {                                     \
      napi_throw_error(env, NULL, "kup native accept: " #call);  \
      return NULL;                                               \
    }                                                            \
  } while (0)

static struct cmd *queue(napi_env env) {
  if (A.nq == A.capq) {
    size_t cap = A.capq ? A.capq * 2 : 64;
    struct cmd *n = realloc(A.q, cap * sizeof *n);
    if (!n) abort();
    A.q = n;
    A.capq = cap;
  }
  (void)env;
  struct cmd *c = &A.q[A.nq++];
  memset(c, 0, sizeof *c);
  return c;
}

static int64_t i64(napi_env env, napi_value v) {
  int64_t x = 0;
  napi_get_value_int64(env, v, &x);
  return x;
}

static uint64_t u64of(napi_env env, napi_value v) {
  double d = 0;
  napi_get_value_double(env, v, &d);
  return (uint64_t)d;
}

static void accept_cleanup(void *arg) {
  (void)arg;
  relay_stop();
}

/* acceptStart(onEvents): once, after the relay's start(). */
static napi_value js_start(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], name;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (A.started || !relay_started()) {
    napi_throw_error(env, NULL, "kup native accept: start once, after the relay's start()");
    return NULL;
  }
  pthread_mutex_init(&A.mu, NULL);
  CHECK(napi_create_string_utf8(env, "kup-accepts", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_create_threadsafe_function(env, argv[0], NULL, name, 0, 1, NULL, NULL, NULL, deliver, &A.tsfn));
  CHECK(napi_unref_threadsafe_function(env, A.tsfn));
  /* Cleanup hooks run in reverse order: this one, added after the threadsafe
   * function, stops the thread before Node releases the function it calls. */
  napi_add_env_cleanup_hook(env, accept_cleanup, NULL);
  A.started = 1;
  return NULL;
}

/* acceptListen(id, fd, group, wantLocal) -> 0 or errno of the dup. Node keeps its own fd (the caller closes its server). */
static napi_value js_listen(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4], ret;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int fd = fcntl(i64(env, argv[1]), F_DUPFD_CLOEXEC, 0);
  if (fd < 0) {
    CHECK(napi_create_int32(env, errno, &ret));
    return ret;
  }
  bool want = false;
  napi_get_value_bool(env, argv[3], &want);
  struct cmd *c = queue(env);
  c->kind = C_LISTEN;
  c->id = (uint64_t)i64(env, argv[0]);
  c->fd = fd;
  c->group = (uint32_t)i64(env, argv[2]);
  c->flag = want;
  struct jsl *j = malloc(sizeof *j);
  if (!j) abort();
  j->id = (uint32_t)c->id;
  j->fd = fd;
  j->next = A.jsl;
  A.jsl = j;
  /* A listening socket keeps Node alive, as net.Server's does. */
  if (A.refs++ == 0) napi_ref_threadsafe_function(env, A.tsfn);
  CHECK(napi_create_int32(env, 0, &ret));
  return ret;
}

/* acceptUnlisten(id): stops accepting and closes the listener. */
static napi_value js_unlisten(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct cmd *c = queue(env);
  c->kind = C_UNLISTEN;
  c->id = (uint64_t)i64(env, argv[0]);
  /* Refused from now on, as Node's close() refuses at once: shutdown() takes a
   * listening socket out of LISTEN (its backlog is reset) while the descriptor
   * stays valid until the thread, which watches it, closes it. */
  for (struct jsl **pp = &A.jsl; *pp; pp = &(*pp)->next) {
    if ((*pp)->id != (uint32_t)c->id) continue;
    struct jsl *j = *pp;
    /* First what completed its handshake but the thread has not accepted yet:
     * established for its client, so served, as Node serves what it accepted
     * before close() (the thread may not have run since). */
    uint32_t cap = 0;
    for (;;) {
      struct sockaddr_storage sa;
      socklen_t len = sizeof sa;
      int fd = accept4(j->fd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        break;
      }
      if (c->nfds == cap) {
        cap = cap ? cap * 2 : 8;
        int *f = realloc(c->fds, cap * sizeof *f);
        struct sockaddr_storage *a = realloc(c->sas, cap * sizeof *a);
        if (!f || !a) abort();
        c->fds = f;
        c->sas = a;
      }
      c->fds[c->nfds] = fd;
      c->sas[c->nfds++] = sa;
    }
    shutdown(j->fd, SHUT_RDWR);
    *pp = j->next;
    free(j);
    break;
  }
  if (A.refs > 0 && --A.refs == 0) napi_unref_threadsafe_function(env, A.tsfn);
  return NULL;
}

/* acceptWantLocal(id, bool): getsockname each accepted connection (for PROXY headers). */
static napi_value js_want_local(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  bool want = false;
  napi_get_value_bool(env, argv[1], &want);
  struct cmd *c = queue(env);
  c->kind = C_WANT_LOCAL;
  c->id = (uint64_t)i64(env, argv[0]);
  c->flag = want;
  return NULL;
}

/*
 * acceptDial(id, relayId, ip, port, timeoutMs, initial, preamble, idleMs, wantSuccess, hold)
 * -> true, or false when `ip` is no address. `hold`: the connection's first
 * dial, from which on it counts as relayed (its close will be reported).
 */
static napi_value js_dial(napi_env env, napi_callback_info info) {
  size_t argc = 10;
  napi_value argv[10], ret;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char ip[INET6_ADDRSTRLEN + 1];
  size_t iplen = 0;
  CHECK(napi_get_value_string_latin1(env, argv[2], ip, sizeof ip, &iplen));
  struct sockaddr_storage sa;
  memset(&sa, 0, sizeof sa);
  socklen_t salen;
  uint16_t port = (uint16_t)i64(env, argv[3]);
  struct sockaddr_in *s4 = (struct sockaddr_in *)&sa;
  struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&sa;
  if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
    s4->sin_family = AF_INET;
    s4->sin_port = htons(port);
    salen = sizeof *s4;
  } else if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1) {
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(port);
    salen = sizeof *s6;
  } else {
    CHECK(napi_get_boolean(env, false, &ret));
    return ret;
  }
  struct cmd *c = queue(env);
  c->kind = C_DIAL;
  c->id = u64of(env, argv[0]);
  c->relay_id = u64of(env, argv[1]);
  c->sa = sa;
  c->salen = salen;
  c->timeout_ms = (uint32_t)i64(env, argv[4]);
  bool isbuf = false;
  napi_is_buffer(env, argv[5], &isbuf);
  if (isbuf) {
    void *p;
    size_t len;
    CHECK(napi_get_buffer_info(env, argv[5], &p, &len));
    if (len) {
      c->initial = malloc(len);
      if (!c->initial) abort();
      memcpy(c->initial, p, len);
      c->len = (uint32_t)len;
    }
  }
  c->preamble = (uint32_t)i64(env, argv[6]);
  c->idle_ms = (uint32_t)i64(env, argv[7]);
  bool b = false;
  napi_get_value_bool(env, argv[8], &b);
  c->flag = b;
  b = false;
  napi_get_value_bool(env, argv[9], &b);
  if (b) relay_hold(env, 1);
  CHECK(napi_get_boolean(env, true, &ret));
  return ret;
}

/* acceptReset(id, release): the client gets a reset; `release` undoes a dial's hold. */
static napi_value js_reset(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct cmd *c = queue(env);
  c->kind = C_RESET;
  c->id = u64of(env, argv[0]);
  bool release = false;
  napi_get_value_bool(env, argv[1], &release);
  if (release) relay_hold(env, -1);
  return NULL;
}

/* acceptRelease(): a held connection that will never report a close (aborted while dialling). */
static napi_value js_release(napi_env env, napi_callback_info info) {
  (void)info;
  relay_hold(env, -1);
  return NULL;
}

/* acceptAbort(group): resets the group's connections not yet relayed; each is reported aborted. */
static napi_value js_abort(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct cmd *c = queue(env);
  c->kind = C_ABORT;
  c->group = (uint32_t)i64(env, argv[0]);
  return NULL;
}

/* acceptFlush(): sends the queued commands to the thread, in order, in one wake-up. */
static napi_value js_flush(napi_env env, napi_callback_info info) {
  (void)info;
  (void)env;
  if (A.nq == 0) return NULL;
  struct batch *b = malloc(sizeof *b);
  if (!b) abort();
  b->cmds = A.q;
  b->n = A.nq;
  A.q = NULL;
  A.nq = A.capq = 0;
  relay_call(run_batch, b);
  return NULL;
}

void accept_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"acceptStart", NULL, js_start, NULL, NULL, NULL, napi_default, NULL},
      {"acceptListen", NULL, js_listen, NULL, NULL, NULL, napi_default, NULL},
      {"acceptUnlisten", NULL, js_unlisten, NULL, NULL, NULL, napi_default, NULL},
      {"acceptWantLocal", NULL, js_want_local, NULL, NULL, NULL, napi_default, NULL},
      {"acceptDial", NULL, js_dial, NULL, NULL, NULL, napi_default, NULL},
      {"acceptReset", NULL, js_reset, NULL, NULL, NULL, napi_default, NULL},
      {"acceptRelease", NULL, js_release, NULL, NULL, NULL, napi_default, NULL},
      {"acceptAbort", NULL, js_abort, NULL, NULL, NULL, napi_default, NULL},
      {"acceptFlush", NULL, js_flush, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
