;; Its allocator hands the host a pointer outside memory for the task input.
;; world: chimera:agent/agent
(module
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 0xfffffff0))
  (func (export "run") (param i32 i32) (result i32) (unreachable)))
