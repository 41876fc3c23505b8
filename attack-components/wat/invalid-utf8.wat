;; Returns Ok(string) whose bytes are not UTF-8.
;; world: chimera:agent/agent
(module
  (memory (export "memory") 1)
  (data (i32.const 100) "\ff\fe\fd\80")
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
  (func (export "run") (param i32 i32) (result i32)
    (i32.store8 (i32.const 0) (i32.const 0))
    (i32.store (i32.const 4) (i32.const 100))
    (i32.store (i32.const 8) (i32.const 4))
    (i32.const 0)))
