;; Declares 128 MiB of initial linear memory: refused at instantiation.
;; world: chimera:agent/agent
(module
  (memory (export "memory") 2048)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
  (func (export "run") (param i32 i32) (result i32) (unreachable)))
