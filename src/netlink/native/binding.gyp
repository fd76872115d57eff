{
  "targets": [
    {
      "target_name": "vipshift_netlink",
      "sources": ["netlink_socket.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
