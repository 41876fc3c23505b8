;; Spins forever in a loop with no calls: only the CPU deadline (epoch
;; interruption) can stop it.
;; world: chimera:agent/agent
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get 3)))
    (local.get $p))
  (func (export "run") (param i32 i32) (result i32)
    (loop $forever (br $forever))
    (unreachable)))
