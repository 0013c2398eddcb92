{
  "targets": [
    {
      "target_name": "fdpass",
      "sources": ["native/fdpass.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
