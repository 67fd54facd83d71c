{
  "targets": [
    {
      "target_name": "kup_relay",
      "sources": ["native/relay.c", "native/udp.c", "native/accept.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-std=gnu11"],
      "conditions": [["OS!='linux'", {"type": "none"}]]
    }
  ]
}
