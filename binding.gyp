{
  "targets": [
    {
      "target_name": "fdpass",
      "sources": ["native/fdpass.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    },
    {
      "target_name": "fdexec",
      "type": "executable",
      "sources": ["native/fdexec.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    },
    {
      "target_name": "launcher",
      "type": "executable",
      "sources": ["native/launcher.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
