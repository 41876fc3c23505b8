;; Hands the host a 56 MiB log message (its whole memory). The host reads it
;; in place and keeps only max_line_bytes; it never copies the rest.
;; world: chimera:agent/agent
(module
  (import "chimera:agent/logging@0.1.0" "log" (func $log (param i32 i32 i32 i32 i32)))
  (memory (export "memory") 900)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
  (func (export "run") (param i32 i32) (result i32)
    (call $log (i32.const 2) (i32.const 0) (i32.const 58982400) (i32.const 0) (i32.const 0))
    (i32.store8 (i32.const 16) (i32.const 0))
    (i32.store (i32.const 20) (i32.const 0))
    (i32.store (i32.const 24) (i32.const 0))
    (i32.const 16)))
