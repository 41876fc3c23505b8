;; Copies 32 MiB within its memory again and again: each copy is one
;; instruction; the deadline is checked between them.
;; world: chimera:agent/agent
(module
  (memory (export "memory") 1024)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
  (func (export "run") (param i32 i32) (result i32)
    (loop $copy
      (memory.copy (i32.const 0) (i32.const 33554432) (i32.const 33554432))
      (br $copy))
    (unreachable)))
