;; Grows a table 10,000 elements at a time until refused, then traps.
;; world: chimera:agent/agent
(module
  (memory (export "memory") 1)
  (table $t 1 funcref)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
  (func (export "run") (param i32 i32) (result i32)
    (loop $grow
      (br_if $grow (i32.ne (table.grow $t (ref.null func) (i32.const 10000)) (i32.const -1))))
    (unreachable)))
