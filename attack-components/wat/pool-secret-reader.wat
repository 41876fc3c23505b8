;; Reads where the writer left its secret and returns those bytes: 16 at
;; offset 1000 and 16 at 3 MiB, as a string. They must all be zero.
;; world: chimera:agent/agent
(module
  (memory (export "memory") 64)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 8192))
  (func (export "run") (param i32 i32) (result i32)
    (memory.copy (i32.const 4096) (i32.const 1000) (i32.const 16))
    (memory.copy (i32.const 4112) (i32.const 3145728) (i32.const 16))
    (i32.store8 (i32.const 16) (i32.const 0))
    (i32.store (i32.const 20) (i32.const 4096))
    (i32.store (i32.const 24) (i32.const 32))
    (i32.const 16)))
