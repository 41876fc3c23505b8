;; Hands `outbound-http.send` a list of 100,000 headers (1.6 MB of list
;; entries, all empty strings). The host refuses the list by its length
;; alone, before reading one element; the agent returns the refusal text.
;; (A list whose host-side view would exceed the store's hostcall fuel, set
;; to the instance's memory limit, traps in wasmtime before the call.)
;; world: chimera:agent/agent
(module
  (import "chimera:agent/outbound-http@0.1.0" "send"
    (func $send (param i32 i32 i32 i32 i32 i32 i32 i32 i32)))
  (memory (export "memory") 30)
  (data (i32.const 16) "http://127.0.0.1:9/x")
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
  (func (export "run") (param i32 i32) (result i32)
    ;; GET, url (16, 20 bytes), headers (65536, 100000 entries), no body;
    ;; the result goes to 64.
    (call $send (i32.const 0) (i32.const 16) (i32.const 20) (i32.const 65536) (i32.const 100000)
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 64))
    ;; result tag at 64 (1: err), http-error tag at 68 (2: too-large), its
    ;; string at 72/76.
    (if (i32.eqz (i32.load8_u (i32.const 64))) (then (unreachable)))
    (if (i32.ne (i32.load8_u (i32.const 68)) (i32.const 2)) (then (unreachable)))
    (i32.store8 (i32.const 128) (i32.const 0))
    (i32.store (i32.const 132) (i32.load (i32.const 72)))
    (i32.store (i32.const 136) (i32.load (i32.const 76)))
    (i32.const 128)))
