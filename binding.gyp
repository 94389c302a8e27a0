{
  "targets": [
    {
      "target_name": "fqe_native",
      "sources": [
        "native/addon.cc",
        "native/layouts.cc",
        "native/libbpf_log.cc",
        "native/maps.cc",
        "native/object.cc",
        "native/packet_socket.cc",
        "native/ringbuf.cc",
        "native/tc.cc",
        "native/tcx.cc",
        "native/test_run.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "bpf/lib"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
      "libraries": ["-lbpf", "-lelf", "-lz"]
    }
  ]
}
