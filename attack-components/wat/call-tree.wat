;; An exponential call tree with no loop instruction: f(n) = f(n-1) + f(n-1),
;; 2^60 calls. Only the CPU deadline, checked at function entry, stops it.
;; world: chimera:agent/agent
(module
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
  (func $f (param $n i32) (result i32)
    (if (result i32) (i32.eqz (local.get $n))
      (then (i32.const 1))
      (else
        (i32.add
          (call $f (i32.sub (local.get $n) (i32.const 1)))
          (call $f (i32.sub (local.get $n) (i32.const 1)))))))
  (func (export "run") (param i32 i32) (result i32)
    (drop (call $f (i32.const 60)))
    (unreachable)))
