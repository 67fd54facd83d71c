/*
 * kup's native relay: one epoll thread moving bytes between pairs of connected
 * TCP sockets that TypeScript accepted, balanced and dialled (Linux only).
 *
 * Descriptor ownership: add() dup()s both descriptors it is given; from then on
 * the relay thread alone uses and closes its copies (JS closes its own at once,
 * which sends nothing: the socket stays open through the dup). The thread removes
 * a descriptor from epoll before closing it, so it never sees a reused number.
 * The one exception: a client handed back after its endpoint reset before any
 * byte moved (early reset) is removed from epoll and its descriptor given to JS,
 * which owns it from then on.
 *
 * Each direction copies through one buffer shared by the thread (recv/send);
 * after a read fills the whole buffer (bulk) it switches to splice(2) through a
 * pipe pair of its own ("auto"). Bytes that could not be sent wait in a small
 * per-direction remainder, and their source is not read until they are gone
 * (backpressure). Closes are reported to JS in batches through one threadsafe
 * function.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "udp.h"

#define BUF_SIZE 65536
#define LINGER_MS 5000

/* How a connection ended, as reported to JS (keep in step with native-relay.ts). */
enum how { HOW_CLOSED = 0, HOW_RESET = 1, HOW_IDLE = 2, HOW_ABORTED = 3, HOW_EARLY_RESET = 4, HOW_ERROR = 5 };

/* What becomes of a side whose peer is gone. */
enum fate { FATE_OPEN = 0, FATE_RESET, FATE_LINGER };

struct dir {
  char *pend; /* bytes read from src not yet sent to dst */
  uint32_t poff, plen;
  int pipe_r, pipe_w; /* splice mode once >= 0 */
  size_t inpipe;
  int eof;     /* src sent its FIN */
  int shut;    /* dst's write side shut down */
  int dropped; /* dst is gone: what src sends is read and dropped */
  uint64_t bytes;
};

struct conn {
  uint64_t id;
  uint32_t group;
  int fd[2];       /* 0 client, 1 endpoint; -1 once closed */
  uint32_t mask[2]; /* epoll interest registered */
  struct dir d[2]; /* d[s]: from side s to side 1-s */
  uint32_t pre_left; /* PROXY header bytes at the front of d[1]... of d[0] still unsent */
  uint32_t preamble;
  int fate[2];
  int how;
  int64_t last;   /* last byte moved (ms, monotonic) */
  int64_t deadline; /* lingering close ends here; 0 = none */
  uint32_t idle_ms;
  int early_ok;
  int dead;
  struct conn *prev, *next; /* idle list (least recently active first) */
  struct conn *all_prev, *all_next;
  struct conn *dead_next;
};

struct report {
  uint64_t id;
  uint64_t in, out;
  int how;
  int fd;
  char *data;
  uint32_t len;
};

enum cmd_kind { CMD_ADD, CMD_ABORT_GROUP, CMD_ABORT_ALL, CMD_STOP, CMD_CALL };
struct cmd {
  enum cmd_kind kind;
  struct conn *c;
  uint32_t group;
  void (*fn)(void *); /* CMD_CALL: run on the thread (native/accept.c's batches) */
  void *arg;
  struct cmd *next;
};
#include "relay.h"

static struct {
  int ep, evfd;
  pthread_t thread;
  int started;
  pthread_mutex_t mu;
  struct cmd *cmds, *cmds_tail;
  struct report *reps;
  size_t nreps, capreps;
  napi_threadsafe_function tsfn;
  napi_ref onCloses; /* the callback, for collect() */
  char buf[BUF_SIZE];
  struct conn *idle_head, *idle_tail;
  struct conn *all;
  struct conn *dead; /* finished, freed after the current batch of events */
  uint64_t lingering; /* connections with a deadline */
  uint32_t min_idle;
  int64_t now;
  int stopping;
  /* JS thread only */
  uint64_t js_active;
  int refed;
} R;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- idle list -------------------------------------------------------- */
static void idle_unlink(struct conn *c) {
  if (c->prev) c->prev->next = c->next; else if (R.idle_head == c) R.idle_head = c->next;
  if (c->next) c->next->prev = c->prev; else if (R.idle_tail == c) R.idle_tail = c->prev;
  c->prev = c->next = NULL;
}
static void idle_push(struct conn *c) {
  c->prev = R.idle_tail;
  c->next = NULL;
  if (R.idle_tail) R.idle_tail->next = c; else R.idle_head = c;
  R.idle_tail = c;
}
static void touch(struct conn *c) {
  c->last = R.now;
  if (c->idle_ms && R.idle_tail != c) {
    idle_unlink(c);
    idle_push(c);
  }
}

/* ---- reports ---------------------------------------------------------- */
static void report(struct conn *c, int fd, char *data, uint32_t len) {
  pthread_mutex_lock(&R.mu);
  if (R.nreps == R.capreps) {
    size_t cap = R.capreps ? R.capreps * 2 : 64;
    struct report *n = realloc(R.reps, cap * sizeof *n);
    if (!n) abort();
    R.reps = n;
    R.capreps = cap;
  }
  int first = R.nreps == 0;
  uint64_t in = c->d[0].bytes;
  R.reps[R.nreps++] = (struct report){c->id, in, c->d[1].bytes, c->how, fd, data, len};
  pthread_mutex_unlock(&R.mu);
  /* One call per batch: JS takes every report queued by the time it runs. */
  if (first) napi_call_threadsafe_function(R.tsfn, NULL, napi_tsfn_nonblocking);
}

/* ---- descriptors ------------------------------------------------------ */
static void set_mask(struct conn *c, int s, uint32_t m) {
  if (c->fd[s] < 0 || c->mask[s] == m) return;
  struct epoll_event ev = {.events = m, .data.u64 = (uint64_t)(uintptr_t)c | (uint64_t)s};
  epoll_ctl(R.ep, EPOLL_CTL_MOD, c->fd[s], &ev);
  c->mask[s] = m;
}

static void close_pipe(struct dir *d) {
  if (d->pipe_r >= 0) close(d->pipe_r);
  if (d->pipe_w >= 0) close(d->pipe_w);
  d->pipe_r = d->pipe_w = -1;
  d->inpipe = 0;
}

/* Removed from epoll before the close, so the number is never watched once reused. */
static void close_side(struct conn *c, int s, int reset) {
  if (c->fd[s] < 0) return;
  epoll_ctl(R.ep, EPOLL_CTL_DEL, c->fd[s], NULL);
  if (reset) {
    struct linger l = {1, 0};
    setsockopt(c->fd[s], SOL_SOCKET, SO_LINGER, &l, sizeof l);
  }
  close(c->fd[s]);
  c->fd[s] = -1;
}

static void bury(struct conn *c) {
  c->dead = 1;
  c->dead_next = R.dead;
  R.dead = c;
}

static void free_conn(struct conn *c) {
  if (c->deadline) R.lingering--;
  for (int i = 0; i < 2; i++) {
    free(c->d[i].pend);
    close_pipe(&c->d[i]);
  }
  idle_unlink(c);
  if (c->all_prev) c->all_prev->all_next = c->all_next; else R.all = c->all_next;
  if (c->all_next) c->all_next->all_prev = c->all_prev;
  free(c);
}

static void finish(struct conn *c, int how) {
  if (c->dead) return;
  bury(c);
  if (c->how == HOW_CLOSED) c->how = how;
  /* Reported before the closes: JS hears of the end before a peer can see it. */
  report(c, -1, NULL, 0);
  close_side(c, 0, 0);
  close_side(c, 1, 0);
}

/* ---- moving bytes ----------------------------------------------------- */
static void side_gone(struct conn *c, int s, int err);

static size_t pending(const struct dir *d) { return (d->plen - d->poff) + d->inpipe; }

/* Sends what waits for side 1-s (from side s). 0 = all sent, 1 = would block, -1 = dst failed. */
static int flush_dir(struct conn *c, int s) {
  struct dir *d = &c->d[s];
  int dst = c->fd[1 - s];
  if (dst < 0) return -1;
  while (d->poff < d->plen) {
    ssize_t n = send(dst, d->pend + d->poff, d->plen - d->poff, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return 1;
      side_gone(c, 1 - s, errno);
      return -1;
    }
    if (s == 0 && c->pre_left) {
      uint32_t p = (uint32_t)n < c->pre_left ? (uint32_t)n : c->pre_left;
      c->pre_left -= p;
      d->bytes += (uint64_t)n - p;
    } else {
      d->bytes += (uint64_t)n;
    }
    d->poff += (uint32_t)n;
    touch(c);
  }
  if (d->plen) {
    free(d->pend);
    d->pend = NULL;
    d->poff = d->plen = 0;
  }
  while (d->inpipe) {
    ssize_t n = splice(d->pipe_r, NULL, dst, NULL, d->inpipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return 1;
      side_gone(c, 1 - s, errno);
      return -1;
    }
    d->inpipe -= (size_t)n;
    d->bytes += (uint64_t)n;
    touch(c);
  }
  return 0;
}

/* The FIN from side s goes on once everything before it did. */
static void carry_fin(struct conn *c, int s) {
  struct dir *d = &c->d[s];
  if (!d->eof || d->shut || pending(d) || d->dropped) return;
  d->shut = 1;
  if (c->d[1 - s].shut && c->fd[0] >= 0 && c->fd[1] >= 0) {
    /* The last FIN: both sides have sent theirs and nothing is left to read,
     * so close() sends it, after the close is reported (finish). */
    finish(c, HOW_CLOSED);
    return;
  }
  if (c->fd[1 - s] >= 0) shutdown(c->fd[1 - s], SHUT_WR);
}

/* Keeps the remainder [p, p+n) of the shared buffer for later. */
static void keep(struct dir *d, const char *p, size_t n) {
  d->pend = malloc(n);
  if (!d->pend) abort();
  memcpy(d->pend, p, n);
  d->poff = 0;
  d->plen = (uint32_t)n;
}

/* Reads side s while it has bytes and side 1-s takes them. */
static void pump(struct conn *c, int s) {
  struct dir *d = &c->d[s];
  int src = c->fd[s];
  for (int rounds = 0; rounds < 16 && src >= 0 && !d->eof && !pending(d); rounds++) {
    if (d->dropped) {
      ssize_t n = recv(src, R.buf, BUF_SIZE, MSG_DONTWAIT);
      if (n > 0) continue;
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) return;
      if (n == 0) d->eof = 1;
      else side_gone(c, s, errno);
      return;
    }
    if (d->pipe_r >= 0) {
      ssize_t n = splice(src, NULL, d->pipe_w, NULL, BUF_SIZE, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return;
        side_gone(c, s, errno);
        return;
      }
      if (n == 0) {
        d->eof = 1;
        carry_fin(c, s);
        return;
      }
      d->inpipe += (size_t)n;
      touch(c);
      if (flush_dir(c, s) != 0) return;
      continue;
    }
    ssize_t n = recv(src, R.buf, BUF_SIZE, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return;
      side_gone(c, s, errno);
      return;
    }
    if (n == 0) {
      d->eof = 1;
      carry_fin(c, s);
      return;
    }
    touch(c);
    int dst = c->fd[1 - s];
    ssize_t w = 0;
    while (w < n) {
      ssize_t k = send(dst, R.buf + w, (size_t)(n - w), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (k < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) break;
        keep(d, R.buf + w, (size_t)(n - w));
        side_gone(c, 1 - s, errno);
        return;
      }
      w += k;
      d->bytes += (uint64_t)k;
    }
    if (w < n) {
      keep(d, R.buf + w, (size_t)(n - w));
      return;
    }
    /* A full buffer means bulk: splice from here on, if a pipe can be had. */
    if (n == BUF_SIZE) {
      int p[2];
      if (pipe2(p, O_NONBLOCK | O_CLOEXEC) == 0) {
        d->pipe_r = p[0];
        d->pipe_w = p[1];
      }
    }
  }
}

/* What each side is watched for, from the state of both directions. */
static void update(struct conn *c) {
  if (c->dead) return;
  for (int s = 0; s < 2; s++) {
    if (c->fd[s] < 0) continue;
    /* No EPOLLRDHUP: level-triggered, it would wake the thread for ever once a
     * side sent its FIN; EPOLLIN reports the FIN when it is wanted. */
    uint32_t m = 0;
    struct dir *from = &c->d[s], *into = &c->d[1 - s];
    if (!from->eof && !pending(from)) m |= EPOLLIN;
    if (pending(into) && !into->dropped) m |= EPOLLOUT;
    set_mask(c, s, m);
  }
}

/* Is the connection over? Both sides closed, or both FINs carried both ways. */
static void check_done(struct conn *c) {
  if (c->dead) return;
  for (int s = 0; s < 2; s++) {
    if (c->fd[s] < 0) continue;
    if (c->fate[s] == FATE_RESET && !pending(&c->d[1 - s])) close_side(c, s, 1);
    else if (c->fate[s] == FATE_LINGER) {
      carry_fin(c, 1 - s);
      if (!c->d[1 - s].shut && !pending(&c->d[1 - s])) {
        shutdown(c->fd[s], SHUT_WR);
        c->d[1 - s].shut = 1;
      }
      if (c->d[s].eof && c->d[1 - s].shut) close_side(c, s, 0);
    }
  }
  if (c->fd[0] < 0 && c->fd[1] < 0) {
    finish(c, HOW_CLOSED);
    return;
  }
  if (c->fd[0] >= 0 && c->fd[1] >= 0 && c->d[0].shut && c->d[1].shut) {
    /* Both FINs carried and both peers done reading what they will read. */
    finish(c, HOW_CLOSED);
  }
}

/*
 * Side s failed with err: nothing more can be sent to it or read from it.
 * Its peer gets what was already read from s, then a reset if s was reset
 * before its FIN, else a FIN and a lingering close (as splice.ts).
 */
static void side_gone(struct conn *c, int s, int err) {
  if (c->fd[s] < 0) return;
  int peer = 1 - s;
  if (s == 1 && err == ECONNRESET && c->early_ok && c->d[1].bytes == 0 && c->d[0].bytes == 0 &&
      c->d[1].inpipe == 0 && c->d[0].inpipe == 0 && !c->d[1].shut && c->fd[0] >= 0) {
    /* Early reset: the client saw nothing; hand it back with what it sent, to be dialled elsewhere. */
    struct dir *d = &c->d[0];
    uint32_t skip = d->poff + c->pre_left;
    uint32_t len = d->plen > skip ? d->plen - skip : 0;
    char *data = NULL;
    if (len) {
      data = malloc(len);
      if (!data) abort();
      memcpy(data, d->pend + skip, len);
    }
    int fd = c->fd[0];
    epoll_ctl(R.ep, EPOLL_CTL_DEL, fd, NULL);
    c->fd[0] = -1;
    close_side(c, 1, 0);
    bury(c);
    c->how = HOW_EARLY_RESET;
    report(c, fd, data, len);
    return;
  }
  int reset = err == ECONNRESET && !c->d[s].eof;
  if (c->how == HOW_CLOSED) c->how = reset ? HOW_RESET : (err == EPIPE ? HOW_CLOSED : HOW_ERROR);
  close_side(c, s, 0);
  c->d[peer].dropped = 1; /* what the peer sends has nowhere to go */
  free(c->d[peer].pend);
  c->d[peer].pend = NULL;
  c->d[peer].poff = c->d[peer].plen = 0;
  close_pipe(&c->d[peer]);
  if (c->fd[peer] < 0) return;
  c->fate[peer] = reset && !c->d[s].shut ? FATE_RESET : FATE_LINGER;
  c->d[s].eof = 1;
  if (!c->deadline) {
    c->deadline = R.now + LINGER_MS;
    R.lingering++;
  }
}

/* ---- the thread ------------------------------------------------------- */
static void adopt(struct conn *c, int registered);
static void take_cmds(void) {
  uint64_t v;
  if (read(R.evfd, &v, sizeof v) < 0) { /* nothing queued */ }
  pthread_mutex_lock(&R.mu);
  struct cmd *q = R.cmds;
  R.cmds = R.cmds_tail = NULL;
  pthread_mutex_unlock(&R.mu);
  while (q) {
    struct cmd *next = q->next;
    if (q->kind == CMD_CALL) {
      q->fn(q->arg);
    } else if (q->kind == CMD_ADD) {
      adopt(q->c, 0);
    } else {
      for (struct conn *c = R.all, *n; c; c = n) {
        n = c->all_next;
        if (q->kind != CMD_ABORT_GROUP || c->group == q->group) {
          finish(c, HOW_ABORTED);
        }
      }
      if (q->kind == CMD_STOP) R.stopping = 1;
    }
    free(q);
    q = next;
  }
}

/* Starts relaying a pair (relay thread). */
static void adopt(struct conn *c, int registered) {
  c->last = R.now;
  c->all_next = R.all;
  if (R.all) R.all->all_prev = c;
  R.all = c;
  if (c->idle_ms) {
    idle_push(c);
    if (!R.min_idle || c->idle_ms < R.min_idle) R.min_idle = c->idle_ms;
  }
  for (int s = 0; s < 2; s++) {
    struct epoll_event ev = {.events = 0, .data.u64 = (uint64_t)(uintptr_t)c | (uint64_t)s};
    /* The endpoint's descriptor of a native dial is already watched (bit s of registered). */
    epoll_ctl(R.ep, registered & (1 << s) ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd[s], &ev);
    c->mask[s] = 0;
  }
  /* The PROXY header (and bytes JS already read) go before anything else. */
  if (flush_dir(c, 0) == 0) pump(c, 0);
  pump(c, 1);
  check_done(c);
  update(c);
}

void relay_adopt(uint64_t id, int cfd, int efd, char *initial, uint32_t len, uint32_t preamble, uint32_t group, uint32_t idle_ms) {
  struct conn *c = calloc(1, sizeof *c);
  if (!c) abort();
  c->id = id;
  c->fd[0] = cfd;
  c->fd[1] = efd;
  for (int s = 0; s < 2; s++) c->d[s].pipe_r = c->d[s].pipe_w = -1;
  if (len) {
    c->d[0].pend = initial;
    c->d[0].plen = len;
  } else {
    free(initial);
  }
  c->preamble = c->pre_left = preamble;
  c->group = group;
  c->idle_ms = idle_ms;
  c->early_ok = 1;
  adopt(c, 2);
}

int relay_epoll(void) { return R.ep; }
int64_t relay_now(void) { return R.now; }
int relay_started(void) { return R.started; }

static void sweep(void) {
  /* Idle: least recently active first. */
  for (int k = 0; k < 4096 && R.idle_head && R.now - R.idle_head->last >= (int64_t)R.min_idle; k++) {
    struct conn *c = R.idle_head;
    if (R.now - c->last >= (int64_t)c->idle_ms) {
      finish(c, HOW_IDLE);
      idle_unlink(c);
    } else {
      idle_unlink(c);
      idle_push(c); /* a longer timeout than the shortest: look again later */
      if (R.idle_head == c) break;
    }
  }
  if (!R.lingering) return;
  for (struct conn *c = R.all; c; c = c->all_next)
    if (c->deadline && R.now >= c->deadline) finish(c, HOW_CLOSED);
}

static void *run(void *arg) {
  (void)arg;
  struct epoll_event evs[256];
  int64_t last_sweep = 0;
  while (!R.stopping) {
    int n = epoll_wait(R.ep, evs, 256, accept_wait_ms(250));
    R.now = now_ms();
    for (int i = 0; i < n; i++) {
      uint64_t u = evs[i].data.u64;
      if (u == 0) {
        take_cmds();
        continue;
      }
      if (u & 2) {
        accept_event(u, evs[i].events);
        continue;
      }
      struct conn *c = (struct conn *)(uintptr_t)(u & ~(uint64_t)1);
      int s = (int)(u & 1);
      uint32_t e = evs[i].events;
      if (c->dead || c->fd[s] < 0) continue;
      /* Reads first: what a side sent before it failed is still delivered
       * (a failed send to it would close it with its answer unread). */
      if (e & (EPOLLIN | EPOLLHUP | EPOLLERR)) pump(c, s);
      if ((e & (EPOLLOUT | EPOLLERR)) && !c->dead && c->fd[s] >= 0) {
        if (flush_dir(c, 1 - s) == 0) {
          carry_fin(c, 1 - s);
          if (!c->dead) pump(c, 1 - s);
        }
      }
      if ((e & EPOLLERR) && !c->dead && c->fd[s] >= 0) {
        /* An error neither a read nor a send met (nothing to do on that side):
         * level-triggered, it must be taken now or it wakes the thread for ever. */
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd[s], SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) side_gone(c, s, err);
      }
      if (!c->dead) check_done(c);
      if (!c->dead) update(c);
    }
    accept_tick();
    /* Free after the batch: a later event in it may still name a finished connection. */
    if (R.now - last_sweep >= 100) {
      last_sweep = R.now;
      sweep();
    }
    while (R.dead) {
      struct conn *c = R.dead;
      R.dead = c->dead_next;
      free_conn(c);
    }
  }
  return NULL;
}

/* ---- N-API: the JS thread's side -------------------------------------- */
static void push_cmd(struct cmd *q) {
  pthread_mutex_lock(&R.mu);
  if (R.cmds_tail) R.cmds_tail->next = q; else R.cmds = q;
  R.cmds_tail = q;
  pthread_mutex_unlock(&R.mu);
  uint64_t one = 1;
  if (write(R.evfd, &one, sizeof one) < 0) { /* the counter cannot overflow here */ }
}

static void deliver(napi_env env, napi_value cb);

/* Runs on the JS thread: hands every queued close to the callback at once. */
static void call_js(napi_env env, napi_value cb, void *ctx, void *data) {
  (void)ctx;
  (void)data;
  if (env == NULL || cb == NULL) return;
  deliver(env, cb);
}

/* Hands every close queued so far to `cb` (JS thread). */
static void deliver(napi_env env, napi_value cb) {
  pthread_mutex_lock(&R.mu);
  struct report *reps = R.reps;
  size_t n = R.nreps;
  R.reps = NULL;
  R.nreps = R.capreps = 0;
  pthread_mutex_unlock(&R.mu);
  if (n == 0) return;
  napi_value ab, arr, extras, undef, argv[2];
  double *f;
  napi_create_arraybuffer(env, n * 5 * sizeof(double), (void **)&f, &ab);
  napi_create_typedarray(env, napi_float64_array, n * 5, ab, 0, &arr);
  napi_create_array(env, &extras);
  napi_get_undefined(env, &undef);
  uint32_t ne = 0;
  for (size_t i = 0; i < n; i++) {
    f[i * 5] = (double)reps[i].id;
    f[i * 5 + 1] = (double)reps[i].in;
    f[i * 5 + 2] = (double)reps[i].out;
    f[i * 5 + 3] = reps[i].how;
    f[i * 5 + 4] = reps[i].fd;
    if (reps[i].how == HOW_EARLY_RESET) {
      napi_value b;
      void *dst;
      napi_create_buffer_copy(env, reps[i].len, reps[i].len ? reps[i].data : "", &dst, &b);
      napi_set_element(env, extras, ne++, b);
      free(reps[i].data);
    }
  }
  free(reps);
  R.js_active = R.js_active > n ? R.js_active - n : 0;
  if (R.js_active == 0 && R.refed) {
    napi_unref_threadsafe_function(env, R.tsfn);
    R.refed = 0;
  }
  argv[0] = arr;
  argv[1] = extras;
  napi_call_function(env, undef, cb, 2, argv, NULL);
}

void relay_call(void (*fn)(void *), void *arg) {
  struct cmd *q = calloc(1, sizeof *q);
  if (!q) abort();
  q->kind = CMD_CALL;
  q->fn = fn;
  q->arg = arg;
  push_cmd(q);
}

void relay_hold(napi_env env, int delta) {
  if (delta > 0) {
    if (R.js_active++ == 0 && !R.refed) {
      napi_ref_threadsafe_function(env, R.tsfn);
      R.refed = 1;
    }
  } else if (R.js_active > 0 && --R.js_active == 0 && R.refed) {
    napi_unref_threadsafe_function(env, R.tsfn);
    R.refed = 0;
  }
}

static void stop_thread(void *arg) {
  (void)arg;
  if (!R.started) return;
  struct cmd *q = calloc(1, sizeof *q);
  if (!q) abort();
  q->kind = CMD_STOP;
  push_cmd(q);
  pthread_join(R.thread, NULL);
  R.started = 0;
}

void relay_stop(void) { stop_thread(NULL); }

#define CHECK(call)                                              \
  do {                                                           \
    if ((call) != napi_ok) {                                     \
      napi_throw_error(env, NULL, "kup native relay: " #call);   \
      return NULL;                                               \
    }                                                            \
  } while (0)

/* start(onCloses): starts the relay thread (once per process). */
static napi_value js_start(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], name;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (R.started) {
    napi_throw_error(env, NULL, "kup native relay: already started");
    return NULL;
  }
  CHECK(napi_create_string_utf8(env, "kup-relay-closes", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_create_reference(env, argv[0], 1, &R.onCloses));
  CHECK(napi_create_threadsafe_function(env, argv[0], NULL, name, 0, 1, NULL, NULL, NULL, call_js, &R.tsfn));
  /* Unref'd while no connection is relayed: the thread alone never keeps Node alive. */
  CHECK(napi_unref_threadsafe_function(env, R.tsfn));
  pthread_mutex_init(&R.mu, NULL);
  R.ep = epoll_create1(EPOLL_CLOEXEC);
  R.evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (R.ep < 0 || R.evfd < 0) {
    napi_throw_error(env, NULL, "kup native relay: epoll/eventfd failed");
    return NULL;
  }
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
  epoll_ctl(R.ep, EPOLL_CTL_ADD, R.evfd, &ev);
  R.now = now_ms();
  if (pthread_create(&R.thread, NULL, run, NULL) != 0) {
    napi_throw_error(env, NULL, "kup native relay: thread failed to start");
    return NULL;
  }
  R.started = 1;
  napi_add_env_cleanup_hook(env, stop_thread, NULL);
  return NULL;
}

static int64_t get_i64(napi_env env, napi_value v) {
  int64_t x = 0;
  napi_get_value_int64(env, v, &x);
  return x;
}

/*
 * add(id, clientFd, endpointFd, initial, preambleLength, group, idleMs, earlyOk)
 * -> 0, or the errno of a failed dup (the caller keeps relaying in JS).
 * `initial` (Buffer or null) is sent to the endpoint before anything else.
 */
static napi_value js_add(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8], ret;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 8 || !R.started) {
    napi_throw_error(env, NULL, "kup native relay: add() needs 8 arguments after start()");
    return NULL;
  }
  int fds[2] = {(int)get_i64(env, argv[1]), (int)get_i64(env, argv[2])};
  int dups[2] = {-1, -1};
  int err = 0;
  for (int s = 0; s < 2 && !err; s++) {
    dups[s] = fcntl(fds[s], F_DUPFD_CLOEXEC, 0);
    if (dups[s] < 0) err = errno;
  }
  struct conn *c = err ? NULL : calloc(1, sizeof *c);
  if (!err && !c) err = ENOMEM;
  if (err) {
    for (int s = 0; s < 2; s++) if (dups[s] >= 0) close(dups[s]);
    CHECK(napi_create_int32(env, err, &ret));
    return ret;
  }
  c->id = (uint64_t)get_i64(env, argv[0]);
  c->fd[0] = dups[0];
  c->fd[1] = dups[1];
  for (int s = 0; s < 2; s++) c->d[s].pipe_r = c->d[s].pipe_w = -1;
  bool isbuf = false;
  napi_is_buffer(env, argv[3], &isbuf);
  if (isbuf) {
    void *p;
    size_t len;
    CHECK(napi_get_buffer_info(env, argv[3], &p, &len));
    if (len) keep(&c->d[0], p, len);
  }
  c->preamble = c->pre_left = (uint32_t)get_i64(env, argv[4]);
  c->group = (uint32_t)get_i64(env, argv[5]);
  c->idle_ms = (uint32_t)get_i64(env, argv[6]);
  bool early = false;
  napi_get_value_bool(env, argv[7], &early);
  c->early_ok = early;
  if (R.js_active++ == 0 && !R.refed) {
    napi_ref_threadsafe_function(env, R.tsfn);
    R.refed = 1;
  }
  struct cmd *q = calloc(1, sizeof *q);
  if (!q) abort();
  q->kind = CMD_ADD;
  q->c = c;
  push_cmd(q);
  CHECK(napi_create_int32(env, 0, &ret));
  return ret;
}

/*
 * collect(): delivers the closes the thread reported so far, now, rather than
 * on the loop's next turn: called before a pick, so least-connections counts
 * connections that already ended.
 */
static napi_value js_collect(napi_env env, napi_callback_info info) {
  (void)info;
  if (!R.started) return NULL;
  pthread_mutex_lock(&R.mu);
  size_t n = R.nreps;
  pthread_mutex_unlock(&R.mu);
  if (n == 0) return NULL;
  napi_value cb;
  CHECK(napi_get_reference_value(env, R.onCloses, &cb));
  deliver(env, cb);
  return NULL;
}

/* abort(group) ends the group's connections now; abort() ends all. */
static napi_value js_abort(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_valuetype t = napi_undefined;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (!R.started) return NULL;
  if (argc > 0) napi_typeof(env, argv[0], &t);
  struct cmd *q = calloc(1, sizeof *q);
  if (!q) abort();
  q->kind = t == napi_number ? CMD_ABORT_GROUP : CMD_ABORT_ALL;
  if (t == napi_number) q->group = (uint32_t)get_i64(env, argv[0]);
  push_cmd(q);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"start", NULL, js_start, NULL, NULL, NULL, napi_default, NULL},
      {"add", NULL, js_add, NULL, NULL, NULL, napi_default, NULL},
      {"abort", NULL, js_abort, NULL, NULL, NULL, napi_default, NULL},
      {"collect", NULL, js_collect, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, 4, props);
  kup_udp_register(env, exports);
  accept_init(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
