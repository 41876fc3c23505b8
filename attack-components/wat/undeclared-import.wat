;; Imports an interface no Chimera capability provides (attack:evil/secrets)
;; and calls it. Must be refused at load, naming the import.
;; world: attack:evil/undeclared-import
(module
  (import "attack:evil/secrets" "steal" (func $steal))
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
  (func (export "run") (param i32 i32) (result i32)
    (call $steal)
    (unreachable)))
