/*
 * kup's native UDP relay: one epoll thread moving datagrams between a
 * service's listening socket and per-client session sockets (Linux only).
 *
 * TypeScript binds the listener (dgram, SO_REUSEPORT, buffer sizes), stops
 * libuv reading it, and hands its descriptor over: the thread dup()s it and
 * reads it with recvmmsg. A client with a session has its datagrams sent on
 * the session's socket, connected to the endpoint TypeScript picked; replies
 * are read from session sockets with recvmmsg and sent back to the clients
 * from the listener with sendmmsg, so they come from the service's address
 * (as the TypeScript path's listener.send does).
 *
 * A datagram from a client with no session opens a pending one (its
 * datagrams queue, at most PENDING_MAX) and a "new session" event goes to
 * TypeScript; the balancer picks there, and open() connects the session's
 * socket on the JS thread and hands it over, or refuse() drops the queue.
 * Sessions end by idle timeout or a failed endpoint (reported back in
 * batches), or by a command from TypeScript (eviction, endpoint gone,
 * listener closed: not reported, TypeScript already did its bookkeeping).
 * At a hand-over (udpAdopt, then udpRelease) each open session gets a
 * socket of its own, bound to the proxy port with SO_REUSEPORT and connected
 * to its client: the kernel prefers it for that client's datagrams, and
 * replies leave from it. Then the thread closes its copy of the listener, so
 * new clients reach only the successor, and the sessions go on until idle.
 * Only the thread touches sessions and their descriptors; commands and
 * events cross through one mutex, an eventfd and one threadsafe function.
 * Counters live in an ArrayBuffer TypeScript allocated and reads at will.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/udp.h>
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

#define BATCH 32
#define DGRAM_MAX 65536
#define PENDING_MAX 64
/* Largest UDP payload one segmentation offload send may carry (IPv4 limit, headers included). */
#define GSO_MAX_BYTES 65000
#define GSO_MAX_SEGS 64
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#define HBITS 16
#define HSIZE (1u << HBITS)

/* Counters a listener's ArrayBuffer holds (keep in step with native-udp.ts). */
enum { C_IN = 0, C_OUT = 1, C_DROPPED = 2, C_COUNT = 3 };
/* Events to JS (keep in step with native-udp.ts). */
enum { EV_NEW = 0, EV_END = 1, EV_CLOSED = 2 };
/* Events to JS, continued: a listener's copy was closed by udpRelease (sessions go on). */
enum { EV_RELEASED = 3 };
/* Why the thread ended a session (keep in step with native-udp.ts). */
enum { END_IDLE = 0, END_ERROR = 1, END_NO_CLIENT_SOCKET = 2 };
/* epoll tags in the low bits of a pointer: what became readable. */
enum { T_LISTENER = 1, T_SESSION = 2, T_CLIENT = 3 };

struct listener {
  uint32_t id;
  int fd;
  uint32_t timeout_ms;
  double *counters; /* in JS memory, kept alive by a reference on the JS side */
  struct sess *lru_head, *lru_tail; /* least recently active first */
  struct listener *next;
  int paused; /* not read while a new client's queue is full: the kernel's buffer holds the rest */
  int released; /* udpRelease closed the thread's copy (fd -1): sessions live on their client sockets */
  int dead;
  struct listener *dead_next;
};

struct pend {
  char *data;
  uint32_t len;
};

struct sess {
  uint64_t id;
  struct listener *l;
  struct sockaddr_storage client;
  socklen_t clen;
  uint32_t hash;
  int fd; /* -1 while pending */
  /*
   * After a hand-over (udpAdopt): a socket bound to the listener's address
   * (SO_REUSEPORT) and connected to the client. The kernel prefers it for
   * this client's datagrams, so they keep coming here once the listener is
   * gone; replies leave from it. -1 while the listener serves.
   */
  int cfd;
  int64_t last;
  struct pend *q;
  uint32_t nq;
  struct sess *cnext; /* client hash chain */
  struct sess *inext; /* id hash chain */
  struct sess *prev, *next; /* listener's LRU */
  int dead;
  struct sess *dead_next;
};

struct ev {
  int kind;
  uint32_t lid;
  uint64_t sid;
  int a, b;
  char addr[INET6_ADDRSTRLEN];
};

enum ckind { C_ADD, C_REMOVE, C_OPEN, C_REFUSE, C_END, C_STOP, C_ADOPT, C_RELEASE };
struct cmd {
  enum ckind kind;
  struct listener *l; /* C_ADD */
  uint32_t lid;
  uint64_t sid;
  int fd;
  int size; /* C_ADOPT: SO_RCVBUF/SO_SNDBUF, 0 keeps the default */
  struct cmd *next;
};

static struct {
  int ep, evfd;
  pthread_t thread;
  int started;
  int stopping;
  pthread_mutex_t mu;
  struct cmd *cmds, *cmds_tail;
  struct ev *evs;
  size_t nevs, capevs;
  napi_threadsafe_function tsfn;
  struct listener *ls;
  /* Ended in this batch of events, freed after it: a later event may still name them. */
  struct sess *dead_sess;
  struct listener *dead_ls;
  struct sess *by_client[HSIZE];
  struct sess *by_id[HSIZE];
  uint64_t next_sid;
  int64_t now;
  /* recvmmsg/sendmmsg buffers (thread only) */
  struct mmsghdr in[BATCH];
  struct iovec iov[BATCH], oiov[BATCH];
  struct sockaddr_storage from[BATCH];
  char (*bufs)[DGRAM_MAX];
  /* JS thread only */
  uint32_t js_listeners;
} U;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- events to JS ----------------------------------------------------- */
static void emit(int kind, uint32_t lid, uint64_t sid, int a, int b, const struct sockaddr_storage *addr) {
  pthread_mutex_lock(&U.mu);
  if (U.nevs == U.capevs) {
    size_t cap = U.capevs ? U.capevs * 2 : 64;
    struct ev *n = realloc(U.evs, cap * sizeof *n);
    if (!n) abort();
    U.evs = n;
    U.capevs = cap;
  }
  int first = U.nevs == 0;
  struct ev *e = &U.evs[U.nevs++];
  e->kind = kind;
  e->lid = lid;
  e->sid = sid;
  e->a = a;
  e->b = b;
  e->addr[0] = 0;
  if (addr) {
    if (addr->ss_family == AF_INET6)
      inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)addr)->sin6_addr, e->addr, sizeof e->addr);
    else
      inet_ntop(AF_INET, &((const struct sockaddr_in *)addr)->sin_addr, e->addr, sizeof e->addr);
  }
  pthread_mutex_unlock(&U.mu);
  /* One call per batch: JS takes every event queued by the time it runs. */
  if (first) napi_call_threadsafe_function(U.tsfn, NULL, napi_tsfn_nonblocking);
}

/* ---- sessions --------------------------------------------------------- */
static uint32_t addr_hash(const struct listener *l, const struct sockaddr_storage *a) {
  uint32_t h = 2166136261u ^ l->id;
  const unsigned char *p;
  size_t n;
  if (a->ss_family == AF_INET6) {
    p = (const unsigned char *)&((const struct sockaddr_in6 *)a)->sin6_addr;
    n = 16;
    h ^= ((const struct sockaddr_in6 *)a)->sin6_port;
  } else {
    p = (const unsigned char *)&((const struct sockaddr_in *)a)->sin_addr;
    n = 4;
    h ^= ((const struct sockaddr_in *)a)->sin_port;
  }
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
  return h;
}

static int same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b) {
  if (a->ss_family != b->ss_family) return 0;
  if (a->ss_family == AF_INET6) {
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
  }
  const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
  return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
}

static struct sess *find_client(struct listener *l, const struct sockaddr_storage *a, uint32_t h) {
  for (struct sess *s = U.by_client[h & (HSIZE - 1)]; s; s = s->cnext)
    if (s->l == l && s->hash == h && same_addr(&s->client, a)) return s;
  return NULL;
}

static struct sess *find_id(uint64_t id) {
  for (struct sess *s = U.by_id[id & (HSIZE - 1)]; s; s = s->inext)
    if (s->id == id) return s;
  return NULL;
}

static void lru_unlink(struct sess *s) {
  struct listener *l = s->l;
  if (s->prev) s->prev->next = s->next; else l->lru_head = s->next;
  if (s->next) s->next->prev = s->prev; else l->lru_tail = s->prev;
  s->prev = s->next = NULL;
}

static void lru_push(struct sess *s) {
  struct listener *l = s->l;
  s->prev = l->lru_tail;
  s->next = NULL;
  if (l->lru_tail) l->lru_tail->next = s; else l->lru_head = s;
  l->lru_tail = s;
}

static void touch(struct sess *s) {
  s->last = U.now;
  if (s->l->lru_tail != s) {
    lru_unlink(s);
    lru_push(s);
  }
}

static void drop_queue(struct sess *s, int count) {
  for (uint32_t i = 0; i < s->nq; i++) free(s->q[i].data);
  if (count) s->l->counters[C_DROPPED] += s->nq;
  free(s->q);
  s->q = NULL;
  s->nq = 0;
}

/* Unlinks and frees a session; its descriptor leaves epoll before the close. */
static void free_sess(struct sess *s) {
  struct sess **p = &U.by_client[s->hash & (HSIZE - 1)];
  while (*p && *p != s) p = &(*p)->cnext;
  if (*p) *p = s->cnext;
  p = &U.by_id[s->id & (HSIZE - 1)];
  while (*p && *p != s) p = &(*p)->inext;
  if (*p) *p = s->inext;
  lru_unlink(s);
  if (s->fd >= 0) {
    epoll_ctl(U.ep, EPOLL_CTL_DEL, s->fd, NULL);
    close(s->fd);
  }
  s->fd = -1;
  if (s->cfd >= 0) {
    epoll_ctl(U.ep, EPOLL_CTL_DEL, s->cfd, NULL);
    close(s->cfd);
  }
  s->cfd = -1;
  drop_queue(s, 1);
  s->dead = 1;
  s->dead_next = U.dead_sess;
  U.dead_sess = s;
}

/* The thread ends a session (idle, endpoint failed) and tells JS. */
static void end_sess(struct sess *s, int why, int err) {
  emit(EV_END, s->l->id, s->id, why, err, NULL);
  free_sess(s);
}

static struct sess *new_sess(struct listener *l, const struct sockaddr_storage *a, socklen_t alen, uint32_t h) {
  struct sess *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->id = ++U.next_sid;
  s->l = l;
  memcpy(&s->client, a, alen);
  s->clen = alen;
  s->hash = h;
  s->fd = -1;
  s->cfd = -1;
  s->last = U.now;
  s->cnext = U.by_client[h & (HSIZE - 1)];
  U.by_client[h & (HSIZE - 1)] = s;
  s->inext = U.by_id[s->id & (HSIZE - 1)];
  U.by_id[s->id & (HSIZE - 1)] = s;
  lru_push(s);
  emit(EV_NEW, l->id, s->id, ntohs(((const struct sockaddr_in *)a)->sin_port), 0, a);
  return s;
}

/*
 * Queues a datagram of a session TypeScript has not answered for yet. Once
 * PENDING_MAX wait, the listener is paused after this batch (the rest of the
 * batch still fits), and the kernel's receive buffer holds what follows, as
 * on the TypeScript path, where nothing is read while the loop picks.
 */
static void enqueue(struct sess *s, const char *p, uint32_t len) {
  if (s->nq >= PENDING_MAX + BATCH) {
    s->l->counters[C_DROPPED]++;
    return;
  }
  if (!s->q) {
    s->q = malloc((PENDING_MAX + BATCH) * sizeof *s->q);
    if (!s->q) abort();
  }
  char *d = malloc(len ? len : 1);
  if (!d) abort();
  memcpy(d, p, len);
  s->q[s->nq++] = (struct pend){d, len};
}

/* Sends one client datagram on the session's socket. 0, or -1 when the session ended. */
static int forward(struct sess *s, const char *p, uint32_t len) {
  for (;;) {
    ssize_t n = send(s->fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0) {
      s->l->counters[C_IN]++;
      return 0;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == ENOBUFS) {
      s->l->counters[C_DROPPED]++;
      return 0;
    }
    /* ECONNREFUSED: the endpoint's ICMP port-unreachable for an earlier datagram. */
    s->l->counters[C_DROPPED]++;
    end_sess(s, END_ERROR, errno);
    return -1;
  }
}

/* ---- the datagram paths ----------------------------------------------- */
static void setup_in(int n) {
  for (int i = 0; i < n; i++) {
    U.iov[i].iov_base = U.bufs[i];
    U.iov[i].iov_len = DGRAM_MAX;
    memset(&U.in[i].msg_hdr, 0, sizeof U.in[i].msg_hdr);
    U.in[i].msg_hdr.msg_iov = &U.iov[i];
    U.in[i].msg_hdr.msg_iovlen = 1;
    U.in[i].msg_hdr.msg_name = &U.from[i];
    U.in[i].msg_hdr.msg_namelen = sizeof U.from[i];
  }
}

/*
 * Sends n (<= BATCH) datagrams iov[0..n) on fd, to `to` (NULL: the connected
 * peer). Consecutive datagrams of one size go as one send with UDP segmentation
 * offload (UDP_SEGMENT: the kernel cuts them apart again, the receiver sees
 * each datagram as sent): a resolver's answers to one client are mostly of one
 * size. The rest go in one sendmmsg. Returns how many went; on a failure *err
 * is its errno and the datagram at the returned index did not go.
 */
static int send_many(int fd, struct iovec *iov, int n, struct sockaddr_storage *to, socklen_t tolen, int *err) {
  struct mmsghdr mm[BATCH];
  int sent = 0;
  *err = 0;
  while (sent < n) {
    size_t seg = iov[sent].iov_len;
    size_t total = seg;
    int k = 1;
    while (sent + k < n && k < GSO_MAX_SEGS && seg > 0 && iov[sent + k].iov_len == seg && total + seg <= GSO_MAX_BYTES) {
      total += seg;
      k++;
    }
    if (k >= 2) {
      char cbuf[CMSG_SPACE(sizeof(uint16_t))];
      struct msghdr mh;
      memset(&mh, 0, sizeof mh);
      memset(cbuf, 0, sizeof cbuf);
      mh.msg_name = to;
      mh.msg_namelen = to ? tolen : 0;
      mh.msg_iov = iov + sent;
      mh.msg_iovlen = (size_t)k;
      mh.msg_control = cbuf;
      mh.msg_controllen = sizeof cbuf;
      struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
      cm->cmsg_level = SOL_UDP;
      cm->cmsg_type = UDP_SEGMENT;
      cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      uint16_t g = (uint16_t)seg;
      memcpy(CMSG_DATA(cm), &g, sizeof g);
      ssize_t r = sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (r >= 0) {
        sent += k;
        continue;
      }
      if (errno == EINTR) continue;
      /* A path that cannot segment (a device MTU below the size, no offload): one by one below. */
      if (errno != EINVAL && errno != EIO && errno != EOPNOTSUPP && errno != ENOPROTOOPT) {
        *err = errno;
        return sent;
      }
    }
    /* The run of differently sized datagrams up to the next same-size pair, in one sendmmsg. */
    int m = 0;
    while (sent + m < n && (m == 0 || m < k || iov[sent + m].iov_len != iov[sent + m - 1].iov_len)) {
      memset(&mm[m].msg_hdr, 0, sizeof mm[m].msg_hdr);
      mm[m].msg_hdr.msg_name = to;
      mm[m].msg_hdr.msg_namelen = to ? tolen : 0;
      mm[m].msg_hdr.msg_iov = &iov[sent + m];
      mm[m].msg_hdr.msg_iovlen = 1;
      m++;
    }
    int r = sendmmsg(fd, mm, (unsigned)m, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      *err = errno;
      return sent;
    }
    sent += r;
  }
  return sent;
}

/* Sends the run of `n` client datagrams (U.oiov) that belong to one session. */
static void flush_run(struct sess *s, int n) {
  int err;
  int sent = send_many(s->fd, U.oiov, n, NULL, 0, &err);
  s->l->counters[C_IN] += sent;
  if (!err) return;
  s->l->counters[C_DROPPED] += n - sent;
  if (err == EAGAIN || err == ENOBUFS) return;
  /* ECONNREFUSED: the endpoint's ICMP port-unreachable for an earlier datagram. */
  end_sess(s, END_ERROR, err);
}

/* Client datagrams: a few batches, then other descriptors get their turn. */
static void on_listener(struct listener *l) {
  if (l->fd < 0) return; /* released earlier in this batch of events */
  for (int round = 0; round < 8; round++) {
    setup_in(BATCH);
    int n = recvmmsg(l->fd, U.in, BATCH, MSG_DONTWAIT, NULL);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      /* A pending socket error: taken now, or level-triggered epoll wakes the thread for ever. */
      int err = 0;
      socklen_t elen = sizeof err;
      getsockopt(l->fd, SOL_SOCKET, SO_ERROR, &err, &elen);
    }
    if (n <= 0) return;
    struct sess *run = NULL;
    int nrun = 0;
    int full = 0;
    for (int i = 0; i < n; i++) {
      const struct sockaddr_storage *a = &U.from[i];
      uint32_t len = U.in[i].msg_len;
      struct sess *s = run;
      if (!s || !same_addr(&s->client, a)) {
        if (run) flush_run(run, nrun);
        run = NULL;
        nrun = 0;
        uint32_t h = addr_hash(l, a);
        s = find_client(l, a, h);
        if (!s) {
          s = new_sess(l, a, U.in[i].msg_hdr.msg_namelen, h);
          if (!s) {
            l->counters[C_DROPPED]++;
            continue;
          }
        }
        touch(s);
      }
      if (s->fd < 0) {
        enqueue(s, U.bufs[i], len);
        if (s->nq >= PENDING_MAX) full = 1;
        continue;
      }
      run = s;
      U.oiov[nrun].iov_base = U.bufs[i];
      U.oiov[nrun].iov_len = len;
      nrun++;
    }
    if (run) flush_run(run, nrun);
    if (full) {
      struct epoll_event ev = {.events = 0, .data.u64 = (uint64_t)(uintptr_t)l | T_LISTENER};
      epoll_ctl(U.ep, EPOLL_CTL_MOD, l->fd, &ev);
      l->paused = 1;
      return;
    }
    if (n < BATCH) return;
  }
}

/* Reads the listener again once TypeScript answered for a new client. */
static void resume(struct listener *l) {
  if (!l->paused || l->dead || l->fd < 0) return;
  l->paused = 0;
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)(uintptr_t)l | T_LISTENER};
  epoll_ctl(U.ep, EPOLL_CTL_MOD, l->fd, &ev);
}

/* Endpoint replies: read in a batch, sent back from the listener in one sendmmsg. */
static void on_session(struct sess *s) {
  struct listener *l = s->l;
  for (int round = 0; round < 8; round++) {
    setup_in(BATCH);
    int n = recvmmsg(s->fd, U.in, BATCH, MSG_DONTWAIT, NULL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      end_sess(s, END_ERROR, errno);
      return;
    }
    if (n == 0) return;
    touch(s);
    for (int i = 0; i < n; i++) {
      U.oiov[i].iov_base = U.bufs[i];
      U.oiov[i].iov_len = U.in[i].msg_len;
    }
    int done = 0;
    while (done < n) {
      int err;
      /* Released: from the client's own socket (connected), the listener is gone. */
      int k = s->cfd >= 0 ? send_many(s->cfd, U.oiov + done, n - done, NULL, 0, &err)
                          : send_many(l->fd, U.oiov + done, n - done, &s->client, s->clen, &err);
      l->counters[C_OUT] += k;
      done += k;
      if (err) {
        /* The listener's send buffer is full (or the client unreachable): this one is lost. */
        l->counters[C_DROPPED]++;
        done++;
      }
    }
    if (n < BATCH) return;
  }
}

/*
 * Client datagrams on a session's client socket (after a hand-over). Nearly
 * all are from its client; one that came in the instant between the bind and
 * the connect may be another's, and goes to that client's session if it has
 * one (else it is dropped, and counted: the client's retry reaches the
 * successor).
 */
static void on_client(struct sess *s) {
  struct listener *l = s->l;
  for (int round = 0; round < 8; round++) {
    setup_in(BATCH);
    int n = recvmmsg(s->cfd, U.in, BATCH, MSG_DONTWAIT, NULL);
    /* An error (the client's ICMP port-unreachable for a reply) is taken by the call: the session goes on. */
    if (n <= 0) return;
    int nrun = 0;
    for (int i = 0; i < n && !s->dead; i++) {
      if (same_addr(&s->client, &U.from[i])) {
        U.oiov[nrun].iov_base = U.bufs[i];
        U.oiov[nrun].iov_len = U.in[i].msg_len;
        nrun++;
        continue;
      }
      struct sess *o = find_client(l, &U.from[i], addr_hash(l, &U.from[i]));
      if (o && o->fd >= 0) {
        touch(o);
        forward(o, U.bufs[i], U.in[i].msg_len);
      } else {
        l->counters[C_DROPPED]++;
      }
    }
    if (nrun > 0 && !s->dead) {
      touch(s);
      flush_run(s, nrun);
    }
    if (s->dead || n < BATCH) return;
  }
}

/*
 * Gives an open session its client socket: bound to the listener's own
 * address with SO_REUSEPORT (the listener has it, so the kernel lets it join
 * the port) and connected to the client. 0, or the errno.
 */
static int adopt(struct sess *s, int size) {
  struct listener *l = s->l;
  struct sockaddr_storage local;
  socklen_t llen = sizeof local;
  if (l->fd < 0 || getsockname(l->fd, (struct sockaddr *)&local, &llen) < 0) return l->fd < 0 ? EBADF : errno;
  int fd = socket(local.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  int one = 1;
  int err = 0;
  if (local.ss_family == AF_INET6) {
    int v6only = 0;
    socklen_t olen = sizeof v6only;
    if (getsockopt(l->fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &olen) == 0)
      setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
  }
  if (size > 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  }
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 || bind(fd, (struct sockaddr *)&local, llen) < 0 ||
      connect(fd, (struct sockaddr *)&s->client, s->clen) < 0) {
    err = errno;
    close(fd);
    return err;
  }
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)(uintptr_t)s | T_CLIENT};
  if (epoll_ctl(U.ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
    err = errno;
    close(fd);
    return err;
  }
  s->cfd = fd;
  return 0;
}

static void sweep(void) {
  for (struct listener *l = U.ls; l; l = l->next) {
    resume(l); /* a safety net: TypeScript answers every new client */
    while (l->lru_head && U.now - l->lru_head->last >= (int64_t)l->timeout_ms) {
      struct sess *s = l->lru_head;
      /* A pending session waits for JS's answer, which always comes. */
      if (s->fd < 0) {
        touch(s);
        if (l->lru_head == s) break;
        continue;
      }
      end_sess(s, END_IDLE, 0);
    }
  }
}

/* ---- commands --------------------------------------------------------- */
static void take_cmds(void) {
  uint64_t v;
  if (read(U.evfd, &v, sizeof v) < 0) { /* nothing queued */ }
  pthread_mutex_lock(&U.mu);
  struct cmd *q = U.cmds;
  U.cmds = U.cmds_tail = NULL;
  pthread_mutex_unlock(&U.mu);
  while (q) {
    struct cmd *next = q->next;
    struct sess *s;
    switch (q->kind) {
      case C_ADD: {
        struct listener *l = q->l;
        l->next = U.ls;
        U.ls = l;
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)(uintptr_t)l | T_LISTENER};
        epoll_ctl(U.ep, EPOLL_CTL_ADD, l->fd, &ev);
        on_listener(l);
        break;
      }
      case C_REMOVE: {
        struct listener **p = &U.ls;
        while (*p && (*p)->id != q->lid) p = &(*p)->next;
        struct listener *l = *p;
        if (!l) break;
        *p = l->next;
        while (l->lru_head) free_sess(l->lru_head);
        if (l->fd >= 0) {
          epoll_ctl(U.ep, EPOLL_CTL_DEL, l->fd, NULL);
          close(l->fd);
        }
        l->fd = -1;
        emit(EV_CLOSED, l->id, 0, 0, 0, NULL);
        l->dead = 1;
        l->dead_next = U.dead_ls;
        U.dead_ls = l;
        break;
      }
      case C_OPEN:
        s = find_id(q->sid);
        if (!s || s->dead || s->fd >= 0) {
          close(q->fd); /* ended meanwhile (listener closed) */
          break;
        }
        s->fd = q->fd;
        {
          struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)(uintptr_t)s | T_SESSION};
          epoll_ctl(U.ep, EPOLL_CTL_ADD, s->fd, &ev);
        }
        {
          struct pend *pq = s->q;
          uint32_t nq = s->nq;
          s->q = NULL;
          s->nq = 0;
          int alive = 1;
          for (uint32_t i = 0; i < nq; i++) {
            if (alive && forward(s, pq[i].data, pq[i].len) < 0) alive = 0;
            free(pq[i].data);
          }
          free(pq);
        }
        resume(s->l);
        break;
      case C_REFUSE:
      case C_END:
        s = find_id(q->sid);
        if (s) {
          struct listener *l = s->l;
          free_sess(s);
          resume(l);
        }
        break;
      case C_STOP:
        U.stopping = 1;
        break;
      case C_ADOPT:
        s = find_id(q->sid);
        /* Gone meanwhile: JS hears of it (an END event) or ended it itself. */
        if (!s || s->dead || s->fd < 0 || s->cfd >= 0) break;
        {
          int err = adopt(s, q->size);
          if (err) end_sess(s, END_NO_CLIENT_SOCKET, err);
        }
        break;
      case C_RELEASE: {
        struct listener *l = U.ls;
        while (l && l->id != q->lid) l = l->next;
        if (!l || l->fd < 0) break;
        /*
         * Sessions without a client socket cannot be reached once the
         * listener is gone: the ones still pending (JS has not seen them
         * yet, and will refuse them) end silently, their queue counted as
         * dropped; their clients' next datagrams reach the successor.
         */
        for (struct sess *x = l->lru_head, *nx; x; x = nx) {
          nx = x->next;
          if (x->cfd >= 0) continue;
          if (x->fd < 0) free_sess(x);
          else end_sess(x, END_NO_CLIENT_SOCKET, 0);
        }
        epoll_ctl(U.ep, EPOLL_CTL_DEL, l->fd, NULL);
        close(l->fd);
        l->fd = -1;
        l->paused = 0;
        l->released = 1;
        emit(EV_RELEASED, l->id, 0, 0, 0, NULL);
        break;
      }
    }
    free(q);
    q = next;
  }
}

static void *run(void *arg) {
  (void)arg;
  struct epoll_event evs[256];
  int64_t last_sweep = 0;
  while (!U.stopping) {
    int n = epoll_wait(U.ep, evs, 256, 100);
    U.now = now_ms();
    for (int i = 0; i < n; i++) {
      uint64_t u = evs[i].data.u64;
      if (u == 0) {
        take_cmds();
        continue;
      }
      if ((u & 3) == T_LISTENER) {
        struct listener *l = (struct listener *)(uintptr_t)(u & ~(uint64_t)3);
        if (!l->dead) on_listener(l);
      } else {
        struct sess *s = (struct sess *)(uintptr_t)(u & ~(uint64_t)3);
        if (s->dead) continue;
        if ((u & 3) == T_CLIENT) on_client(s);
        else on_session(s);
      }
    }
    if (U.now - last_sweep >= 50) {
      last_sweep = U.now;
      sweep();
    }
    while (U.dead_sess) {
      struct sess *s = U.dead_sess;
      U.dead_sess = s->dead_next;
      free(s);
    }
    while (U.dead_ls) {
      struct listener *l = U.dead_ls;
      U.dead_ls = l->dead_next;
      free(l);
    }
  }
  return NULL;
}

/* ---- N-API ------------------------------------------------------------ */
static void push_cmd(struct cmd *q) {
  pthread_mutex_lock(&U.mu);
  if (U.cmds_tail) U.cmds_tail->next = q; else U.cmds = q;
  U.cmds_tail = q;
  pthread_mutex_unlock(&U.mu);
  uint64_t one = 1;
  if (write(U.evfd, &one, sizeof one) < 0) { /* the counter cannot overflow here */ }
}

static struct cmd *new_cmd(enum ckind k) {
  struct cmd *q = calloc(1, sizeof *q);
  if (!q) abort();
  q->kind = k;
  return q;
}

static void call_js(napi_env env, napi_value cb, void *ctx, void *data) {
  (void)ctx;
  (void)data;
  if (env == NULL || cb == NULL) return;
  pthread_mutex_lock(&U.mu);
  struct ev *evs = U.evs;
  size_t n = U.nevs;
  U.evs = NULL;
  U.nevs = U.capevs = 0;
  pthread_mutex_unlock(&U.mu);
  if (n == 0) return;
  napi_value ab, arr, addrs, undef, argv[2];
  double *f;
  napi_create_arraybuffer(env, n * 5 * sizeof(double), (void **)&f, &ab);
  napi_create_typedarray(env, napi_float64_array, n * 5, ab, 0, &arr);
  napi_create_array(env, &addrs);
  napi_get_undefined(env, &undef);
  uint32_t na = 0;
  for (size_t i = 0; i < n; i++) {
    f[i * 5] = evs[i].kind;
    f[i * 5 + 1] = evs[i].lid;
    f[i * 5 + 2] = (double)evs[i].sid;
    f[i * 5 + 3] = evs[i].a;
    f[i * 5 + 4] = evs[i].b;
    if (evs[i].kind == EV_NEW) {
      napi_value s;
      napi_create_string_utf8(env, evs[i].addr, NAPI_AUTO_LENGTH, &s);
      napi_set_element(env, addrs, na++, s);
    }
    if (evs[i].kind == EV_CLOSED && --U.js_listeners == 0) napi_unref_threadsafe_function(env, U.tsfn);
  }
  free(evs);
  argv[0] = arr;
  argv[1] = addrs;
  napi_call_function(env, undef, cb, 2, argv, NULL);
}

static void stop_thread(void *arg) {
  (void)arg;
  if (!U.started) return;
  push_cmd(new_cmd(C_STOP));
  pthread_join(U.thread, NULL);
  U.started = 0;
}

#define CHECK(call)                                                \
  do {                                                             \
    if ((call) != napi_ok) {                                       \
      napi_throw_error(env, NULL, "kup native UDP relay: " #call); \
      return NULL;                                                 \
    }                                                              \
  } while (0)

static int64_t get_i64(napi_env env, napi_value v) {
  int64_t x = 0;
  napi_get_value_int64(env, v, &x);
  return x;
}

static napi_value int_result(napi_env env, int v) {
  napi_value r;
  napi_create_int32(env, v, &r);
  return r;
}

/* udpStart(onEvents): starts the UDP thread (once per process). */
static napi_value js_start(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], name;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (U.started) {
    napi_throw_error(env, NULL, "kup native UDP relay: already started");
    return NULL;
  }
  U.bufs = malloc((size_t)BATCH * DGRAM_MAX);
  if (!U.bufs) {
    napi_throw_error(env, NULL, "kup native UDP relay: out of memory");
    return NULL;
  }
  CHECK(napi_create_string_utf8(env, "kup-udp-events", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_create_threadsafe_function(env, argv[0], NULL, name, 0, 1, NULL, NULL, NULL, call_js, &U.tsfn));
  /* Ref'd only while a listener is registered, as a listening dgram socket would be. */
  CHECK(napi_unref_threadsafe_function(env, U.tsfn));
  pthread_mutex_init(&U.mu, NULL);
  U.ep = epoll_create1(EPOLL_CLOEXEC);
  U.evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (U.ep < 0 || U.evfd < 0) {
    napi_throw_error(env, NULL, "kup native UDP relay: epoll/eventfd failed");
    return NULL;
  }
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
  epoll_ctl(U.ep, EPOLL_CTL_ADD, U.evfd, &ev);
  U.now = now_ms();
  if (pthread_create(&U.thread, NULL, run, NULL) != 0) {
    napi_throw_error(env, NULL, "kup native UDP relay: thread failed to start");
    return NULL;
  }
  U.started = 1;
  napi_add_env_cleanup_hook(env, stop_thread, NULL);
  return NULL;
}

/*
 * udpAdd(id, fd, timeoutMs, counters: ArrayBuffer) -> 0 or errno of the dup.
 * The caller keeps `counters` alive until the listener's CLOSED event.
 */
static napi_value js_add(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 4 || !U.started) {
    napi_throw_error(env, NULL, "kup native UDP relay: udpAdd() needs 4 arguments after udpStart()");
    return NULL;
  }
  void *data = NULL;
  size_t len = 0;
  CHECK(napi_get_arraybuffer_info(env, argv[3], &data, &len));
  if (len < C_COUNT * sizeof(double)) {
    napi_throw_error(env, NULL, "kup native UDP relay: counters too small");
    return NULL;
  }
  int fd = fcntl((int)get_i64(env, argv[1]), F_DUPFD_CLOEXEC, 0);
  if (fd < 0) return int_result(env, errno);
  struct listener *l = calloc(1, sizeof *l);
  if (!l) {
    close(fd);
    return int_result(env, ENOMEM);
  }
  l->id = (uint32_t)get_i64(env, argv[0]);
  l->fd = fd;
  l->timeout_ms = (uint32_t)get_i64(env, argv[2]);
  l->counters = data;
  int flags = fcntl(fd, F_GETFL);
  if (flags >= 0) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  if (U.js_listeners++ == 0) napi_ref_threadsafe_function(env, U.tsfn);
  struct cmd *q = new_cmd(C_ADD);
  q->l = l;
  push_cmd(q);
  return int_result(env, 0);
}

/* udpRemove(id): ends the listener's sessions, closes its copy, then a CLOSED event. */
static napi_value js_remove(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (!U.started || argc < 1) return NULL;
  struct cmd *q = new_cmd(C_REMOVE);
  q->lid = (uint32_t)get_i64(env, argv[0]);
  push_cmd(q);
  return NULL;
}

/*
 * udpOpen(sessionId, ip, port, bufferSize) -> 0, or the errno of socket/connect
 * (the session is then dropped). Connects on the JS thread, so a failure is
 * known at once; the thread owns the descriptor from here on.
 */
static napi_value js_open(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 4 || !U.started) {
    napi_throw_error(env, NULL, "kup native UDP relay: udpOpen() needs 4 arguments");
    return NULL;
  }
  uint64_t sid = (uint64_t)get_i64(env, argv[0]);
  char ip[INET6_ADDRSTRLEN + 1];
  size_t iplen = 0;
  CHECK(napi_get_value_string_utf8(env, argv[1], ip, sizeof ip, &iplen));
  int port = (int)get_i64(env, argv[2]);
  int size = (int)get_i64(env, argv[3]);
  struct sockaddr_storage ss;
  socklen_t slen;
  memset(&ss, 0, sizeof ss);
  struct sockaddr_in *v4 = (void *)&ss;
  struct sockaddr_in6 *v6 = (void *)&ss;
  int err = 0;
  if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons((uint16_t)port);
    slen = sizeof *v4;
  } else if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons((uint16_t)port);
    slen = sizeof *v6;
  } else {
    err = EINVAL;
    slen = 0;
  }
  int fd = -1;
  if (!err) {
    fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) err = errno;
  }
  if (!err && size > 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  }
  if (!err && connect(fd, (struct sockaddr *)&ss, slen) < 0) err = errno;
  struct cmd *q = new_cmd(err ? C_REFUSE : C_OPEN);
  q->sid = sid;
  q->fd = fd;
  if (err && fd >= 0) close(fd);
  push_cmd(q);
  return int_result(env, err);
}

/* A command naming one session: udpRefuse and udpEnd. */
static napi_value session_cmd(napi_env env, napi_callback_info info, enum ckind kind) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (!U.started || argc < 1) return NULL;
  struct cmd *q = new_cmd(kind);
  q->sid = (uint64_t)get_i64(env, argv[0]);
  push_cmd(q);
  return NULL;
}

/* udpRefuse(sessionId): no endpoint for it; its queued datagrams are dropped (and counted). */
static napi_value js_refuse(napi_env env, napi_callback_info info) { return session_cmd(env, info, C_REFUSE); }

/* udpEnd(sessionId): JS ended it (eviction, endpoint gone): closed without an event. */
static napi_value js_end(napi_env env, napi_callback_info info) { return session_cmd(env, info, C_END); }

/*
 * udpAdopt(sessionId, bufferSize): hand-over; the thread gives the open
 * session a socket of its own bound to the proxy port and connected to the
 * client. On failure the session ends with an END event (no client socket).
 */
static napi_value js_adopt(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (!U.started || argc < 2) return NULL;
  struct cmd *q = new_cmd(C_ADOPT);
  q->sid = (uint64_t)get_i64(env, argv[0]);
  q->size = (int)get_i64(env, argv[1]);
  push_cmd(q);
  return NULL;
}

/*
 * udpRelease(id): hand-over, after udpAdopt of each session; the thread stops
 * reading the listener and closes its copy, then a RELEASED event. Sessions
 * with a client socket go on until they end as usual.
 */
static napi_value js_release(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (!U.started || argc < 1) return NULL;
  struct cmd *q = new_cmd(C_RELEASE);
  q->lid = (uint32_t)get_i64(env, argv[0]);
  push_cmd(q);
  return NULL;
}

void kup_udp_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"udpStart", NULL, js_start, NULL, NULL, NULL, napi_default, NULL},
      {"udpAdd", NULL, js_add, NULL, NULL, NULL, napi_default, NULL},
      {"udpRemove", NULL, js_remove, NULL, NULL, NULL, napi_default, NULL},
      {"udpOpen", NULL, js_open, NULL, NULL, NULL, napi_default, NULL},
      {"udpRefuse", NULL, js_refuse, NULL, NULL, NULL, napi_default, NULL},
      {"udpEnd", NULL, js_end, NULL, NULL, NULL, napi_default, NULL},
      {"udpAdopt", NULL, js_adopt, NULL, NULL, NULL, napi_default, NULL},
      {"udpRelease", NULL, js_release, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, 8, props);
}
