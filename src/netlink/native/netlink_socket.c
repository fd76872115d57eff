/*
 * vipshift's netlink socket: AF_NETLINK sockets for Node, nothing more.
 *
 * Messages, attributes and families are built and parsed in TypeScript; this
 * addon only opens sockets, sets options, sends one buffer per sendmsg() and
 * reads datagrams through libuv's poll. A receive-buffer overrun (ENOBUFS) is
 * reported to JavaScript as an event instead of aborting the process, so that
 * a listener that fell behind can resynchronise by a dump (docs/architecture.md, kernel facts).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <sched.h>
#include <node_api.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

#define RECV_BUFFER_BYTES (1 << 20)

typedef struct {
  int fd;
  uint32_t port_id;
  uv_poll_t poll;
  int polling;
  napi_env env;
  napi_ref on_datagram; /* function(datagram: Buffer | null, errno: number) */
  napi_ref self;
  unsigned char *recv_buffer;
} netlink_socket;

#define CHECK(env, call)                                                        \
  do {                                                                          \
    if ((call) != napi_ok) {                                                    \
      napi_throw_error((env), NULL, "napi call failed: " #call);                \
      return NULL;                                                              \
    }                                                                           \
  } while (0)

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char message[256];
  snprintf(message, sizeof message, "%s: %s", what, strerror(err));
  napi_value msg, error, code, number;
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg);
  napi_create_error(env, NULL, msg, &error);
  napi_create_int32(env, err, &number);
  napi_set_named_property(env, error, "errno", number);
  const char *name = strerrorname_np(err);
  napi_create_string_utf8(env, name ? name : "EUNKNOWN", NAPI_AUTO_LENGTH, &code);
  napi_set_named_property(env, error, "code", code);
  napi_throw(env, error);
  return NULL;
}

static netlink_socket *unwrap(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv) {
  napi_value this_arg;
  netlink_socket *sock = NULL;
  if (napi_get_cb_info(env, info, argc, argv, &this_arg, NULL) != napi_ok) return NULL;
  if (napi_unwrap(env, this_arg, (void **)&sock) != napi_ok || sock == NULL) {
    napi_throw_error(env, NULL, "not a netlink socket");
    return NULL;
  }
  if (sock->fd < 0) {
    napi_throw_error(env, "EBADF", "netlink socket is closed");
    return NULL;
  }
  return sock;
}

static void on_poll_closed(uv_handle_t *handle) {
  netlink_socket *sock = handle->data;
  free(sock->recv_buffer);
  free(sock);
}

static void stop_polling(netlink_socket *sock) {
  if (sock->polling) {
    uv_poll_stop(&sock->poll);
    sock->polling = 0;
    if (sock->self) napi_reference_unref(sock->env, sock->self, NULL);
  }
}

static void deliver(netlink_socket *sock, const unsigned char *data, size_t len, int err) {
  napi_env env = sock->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value callback, recv, argv[2], result, resource, resource_name;
  napi_get_reference_value(env, sock->on_datagram, &callback);
  napi_get_reference_value(env, sock->self, &recv);
  if (data) {
    void *copy;
    napi_create_buffer_copy(env, len, data, &copy, &argv[0]);
  } else {
    napi_get_null(env, &argv[0]);
  }
  napi_create_int32(env, err, &argv[1]);
  napi_create_object(env, &resource);
  napi_create_string_utf8(env, "vipshift.netlink", NAPI_AUTO_LENGTH, &resource_name);
  napi_async_context context;
  napi_async_init(env, resource, resource_name, &context);
  napi_status status = napi_make_callback(env, context, recv, callback, 2, argv, &result);
  if (status == napi_pending_exception) {
    napi_value exception;
    napi_get_and_clear_last_exception(env, &exception);
    napi_fatal_exception(env, exception);
  }
  napi_async_destroy(env, context);
  napi_close_handle_scope(env, scope);
}

static void on_readable(uv_poll_t *handle, int status, int events) {
  netlink_socket *sock = handle->data;
  (void)events;
  if (status < 0) {
    /*
     * libuv reports POLLERR as UV_EBADF and stops the handle. On a netlink socket
     * POLLERR means sk_err is set, typically ENOBUFS after an overrun: fetch (and
     * clear) the real error, report it, and poll again so the socket lives on.
     */
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(sock->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    else if (err == 0) err = -status;
    deliver(sock, NULL, 0, err);
    if (err == EBADF || !sock->polling || sock->fd < 0) return;
    int rc = uv_poll_start(&sock->poll, UV_READABLE, on_readable);
    if (rc < 0) {
      deliver(sock, NULL, 0, -rc);
      return;
    }
  }
  /* Drain what is queued now, bounded so that one busy socket cannot starve the loop. */
  for (int i = 0; i < 256 && sock->polling && sock->fd >= 0; i++) {
    ssize_t n = recv(sock->fd, sock->recv_buffer, RECV_BUFFER_BYTES, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR) continue;
      deliver(sock, NULL, 0, errno);
      continue;
    }
    deliver(sock, sock->recv_buffer, (size_t)n, 0);
  }
}

static void finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  netlink_socket *sock = data;
  if (sock->fd >= 0) {
    close(sock->fd);
    sock->fd = -1;
  }
  if (sock->on_datagram) napi_delete_reference(env, sock->on_datagram);
  uv_close((uv_handle_t *)&sock->poll, on_poll_closed);
}

/*
 * Opens the socket inside the network namespace at `netns_path` (a file under
 * /run/netns): the thread enters it for socket()+bind() and returns at once. A
 * socket keeps the namespace it was created in, so the rest of the process (and
 * libuv's threads) never leave their own.
 */
static int open_in_netns(const char *netns_path, int protocol, struct sockaddr_nl *local, const char **failed) {
  int home = -1, target = -1, fd = -1, err = 0;
  if (netns_path) {
    home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (home < 0) return *failed = "open(/proc/thread-self/ns/net)", -errno;
    target = open(netns_path, O_RDONLY | O_CLOEXEC);
    if (target < 0) {
      err = errno;
      close(home);
      return *failed = "open(netns)", -err;
    }
    if (setns(target, CLONE_NEWNET) < 0) {
      err = errno;
      close(home);
      close(target);
      return *failed = "setns(netns)", -err;
    }
    close(target);
  }
  fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, protocol);
  if (fd < 0) {
    err = errno;
    *failed = "socket(AF_NETLINK)";
  } else if (bind(fd, (struct sockaddr *)local, sizeof *local) < 0) {
    err = errno;
    *failed = "bind(AF_NETLINK)";
    close(fd);
    fd = -1;
  }
  if (home >= 0) {
    /* Failing to return would leave the main thread in the wrong namespace: nothing sane to do. */
    if (setns(home, CLONE_NEWNET) < 0) abort();
    close(home);
  }
  return fd >= 0 ? fd : -err;
}

/* new NetlinkSocket(protocol: number, groups: number, netnsPath?: string) */
static napi_value construct(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], this_arg;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, &this_arg, NULL));
  int32_t protocol = 0;
  uint32_t groups = 0;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &protocol) != napi_ok) {
    napi_throw_type_error(env, NULL, "protocol must be a number");
    return NULL;
  }
  if (argc >= 2) napi_get_value_uint32(env, argv[1], &groups);
  char netns_path[4096];
  int in_netns = 0;
  if (argc >= 3) {
    napi_valuetype type;
    napi_typeof(env, argv[2], &type);
    if (type == napi_string) {
      size_t copied;
      napi_get_value_string_utf8(env, argv[2], netns_path, sizeof netns_path, &copied);
      in_netns = 1;
    } else if (type != napi_undefined && type != napi_null) {
      napi_throw_type_error(env, NULL, "netnsPath must be a string");
      return NULL;
    }
  }

  struct sockaddr_nl local = {.nl_family = AF_NETLINK, .nl_groups = groups};
  const char *failed = NULL;
  int fd = open_in_netns(in_netns ? netns_path : NULL, protocol, &local, &failed);
  if (fd < 0) return throw_errno(env, failed, -fd);
  socklen_t len = sizeof local;
  getsockname(fd, (struct sockaddr *)&local, &len);

  netlink_socket *sock = calloc(1, sizeof *sock);
  sock->recv_buffer = malloc(RECV_BUFFER_BYTES);
  sock->fd = fd;
  sock->port_id = local.nl_pid;
  sock->env = env;
  uv_loop_t *loop;
  napi_get_uv_event_loop(env, &loop);
  uv_poll_init(loop, &sock->poll, fd);
  sock->poll.data = sock;
  CHECK(env, napi_wrap(env, this_arg, sock, finalize, NULL, NULL));
  /* A weak reference: the socket stays alive while polling by taking a strong count. */
  CHECK(env, napi_create_reference(env, this_arg, 0, &sock->self));
  return this_arg;
}

/* send(message: Buffer): number — one sendmsg() to the kernel */
static napi_value send_buffer(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  netlink_socket *sock = unwrap(env, info, &argc, argv);
  if (!sock) return NULL;
  void *data;
  size_t length;
  if (argc < 1 || napi_get_buffer_info(env, argv[0], &data, &length) != napi_ok) {
    napi_throw_type_error(env, NULL, "send expects a Buffer");
    return NULL;
  }
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  struct iovec iov = {.iov_base = data, .iov_len = length};
  struct msghdr msg = {.msg_name = &kernel, .msg_namelen = sizeof kernel, .msg_iov = &iov, .msg_iovlen = 1};
  ssize_t sent;
  do {
    sent = sendmsg(sock->fd, &msg, 0);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) return throw_errno(env, "sendmsg(AF_NETLINK)", errno);
  napi_value result;
  napi_create_double(env, (double)sent, &result);
  return result;
}

/* setOption(level: number, name: number, value: number) — an int-valued setsockopt() */
static napi_value set_option(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  netlink_socket *sock = unwrap(env, info, &argc, argv);
  if (!sock) return NULL;
  int32_t level, name, value;
  if (argc < 3 || napi_get_value_int32(env, argv[0], &level) != napi_ok ||
      napi_get_value_int32(env, argv[1], &name) != napi_ok || napi_get_value_int32(env, argv[2], &value) != napi_ok) {
    napi_throw_type_error(env, NULL, "setOption expects (level, name, value) numbers");
    return NULL;
  }
  if (setsockopt(sock->fd, level, name, &value, sizeof value) < 0) return throw_errno(env, "setsockopt", errno);
  return NULL;
}

/* getOption(level: number, name: number): number */
static napi_value get_option(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  netlink_socket *sock = unwrap(env, info, &argc, argv);
  if (!sock) return NULL;
  int32_t level, name, value = 0;
  socklen_t len = sizeof value;
  if (argc < 2 || napi_get_value_int32(env, argv[0], &level) != napi_ok ||
      napi_get_value_int32(env, argv[1], &name) != napi_ok) {
    napi_throw_type_error(env, NULL, "getOption expects (level, name) numbers");
    return NULL;
  }
  if (getsockopt(sock->fd, level, name, &value, &len) < 0) return throw_errno(env, "getsockopt", errno);
  napi_value result;
  napi_create_int32(env, value, &result);
  return result;
}

/* start(onDatagram: (datagram: Buffer | null, errno: number) => void) */
static napi_value start(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  netlink_socket *sock = unwrap(env, info, &argc, argv);
  if (!sock) return NULL;
  napi_valuetype type;
  if (argc < 1 || napi_typeof(env, argv[0], &type) != napi_ok || type != napi_function) {
    napi_throw_type_error(env, NULL, "start expects a callback");
    return NULL;
  }
  if (sock->on_datagram) napi_delete_reference(env, sock->on_datagram);
  CHECK(env, napi_create_reference(env, argv[0], 1, &sock->on_datagram));
  if (!sock->polling) {
    int rc = uv_poll_start(&sock->poll, UV_READABLE, on_readable);
    if (rc < 0) return throw_errno(env, "uv_poll_start", -rc);
    sock->polling = 1;
    napi_reference_ref(env, sock->self, NULL);
  }
  return NULL;
}

/* stop(): stop reading; the socket stays open */
static napi_value stop(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  netlink_socket *sock = unwrap(env, info, &argc, NULL);
  if (!sock) return NULL;
  stop_polling(sock);
  return NULL;
}

static napi_value close_socket(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  napi_value this_arg;
  netlink_socket *sock = NULL;
  napi_get_cb_info(env, info, &argc, NULL, &this_arg, NULL);
  if (napi_unwrap(env, this_arg, (void **)&sock) != napi_ok || !sock || sock->fd < 0) return NULL;
  stop_polling(sock);
  close(sock->fd);
  sock->fd = -1;
  return NULL;
}

static napi_value port_id(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  netlink_socket *sock = unwrap(env, info, &argc, NULL);
  if (!sock) return NULL;
  napi_value result;
  napi_create_uint32(env, sock->port_id, &result);
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor methods[] = {
      {"send", NULL, send_buffer, NULL, NULL, NULL, napi_default, NULL},
      {"setOption", NULL, set_option, NULL, NULL, NULL, napi_default, NULL},
      {"getOption", NULL, get_option, NULL, NULL, NULL, napi_default, NULL},
      {"start", NULL, start, NULL, NULL, NULL, napi_default, NULL},
      {"stop", NULL, stop, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, close_socket, NULL, NULL, NULL, napi_default, NULL},
      {"portId", NULL, NULL, port_id, NULL, NULL, napi_default, NULL},
  };
  napi_value constructor;
  napi_define_class(env, "NetlinkSocket", NAPI_AUTO_LENGTH, construct, NULL, sizeof methods / sizeof methods[0],
                    methods, &constructor);
  napi_set_named_property(env, exports, "NetlinkSocket", constructor);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
