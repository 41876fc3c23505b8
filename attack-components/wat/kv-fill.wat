;; Fills its KV namespace: sets key after key until the host refuses one.
;; Input: "V" or "V K" (decimal): each value is V bytes, each key K bytes
;; (at least 8: 'x' padding, then the write's number in 8 hex digits; K = 8
;; by default), so key N is the same on every run and a second run first
;; overwrites what the first wrote. Output: "N sets, then error T: MESSAGE",
;; N the writes that succeeded, T the kv-error case (1 = too-large).
;; world: chimera:agent/agent
(module
  (import "chimera:agent/kv@0.1.0" "set" (func $set (param i32 i32 i32 i32 i32)))
  ;; 0: hex digits; 32: text; 64: set's return area; 96: run's return area;
  ;; 1024: the output; 65536: the value (zeros); 131072: the key;
  ;; 196608: the heap for what the host hands over (input, error text).
  (memory (export "memory") 4)
  (data (i32.const 0) "0123456789abcdef")
  (data (i32.const 32) " sets, then error ")
  (global $heap (mut i32) (i32.const 196608))

  (func $realloc (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32) (local $end i32) (local $size i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
                           (i32.sub (i32.const 0) (local.get 2))))
    (local.set $end (i32.add (local.get $p) (local.get 3)))
    (local.set $size (i32.shl (memory.size) (i32.const 16)))
    (if (i32.gt_u (local.get $end) (local.get $size))
      (then
        (if (i32.eq (memory.grow (i32.shr_u (i32.add (i32.sub (local.get $end) (local.get $size)) (i32.const 65535))
                                            (i32.const 16)))
                    (i32.const -1))
          (then (unreachable)))))
    (global.set $heap (local.get $end))
    (local.get $p))

  ;; Writes $n in decimal so that it ends at $end; returns where it starts.
  (func $itoa (param $n i32) (param $end i32) (result i32)
    (loop $digit
      (local.set $end (i32.sub (local.get $end) (i32.const 1)))
      (i32.store8 (local.get $end) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digit (local.get $n)))
    (local.get $end))

  (func (export "run") (param $in i32) (param $len i32) (result i32)
    (local $i i32) (local $c i32) (local $v i32) (local $k i32) (local $second i32)
    (local $n i32) (local $d i32) (local $digits i32) (local $start i32)
    (local $msg i32) (local $msg_len i32)
    ;; parse "V" or "V K"
    (local.set $k (i32.const 8))
    (block $parsed
      (loop $parse
        (br_if $parsed (i32.ge_u (local.get $i) (local.get $len)))
        (local.set $c (i32.load8_u (i32.add (local.get $in) (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (if (i32.eq (local.get $c) (i32.const 32))
          (then (local.set $second (i32.const 1)) (local.set $k (i32.const 0)) (br $parse)))
        (local.set $c (i32.sub (local.get $c) (i32.const 48)))
        (if (local.get $second)
          (then (local.set $k (i32.add (i32.mul (local.get $k) (i32.const 10)) (local.get $c))))
          (else (local.set $v (i32.add (i32.mul (local.get $v) (i32.const 10)) (local.get $c)))))
        (br $parse)))
    (if (i32.lt_u (local.get $k) (i32.const 8)) (then (local.set $k (i32.const 8))))
    ;; the key: 'x' padding, then 8 hex digits at its end
    (memory.fill (i32.const 131072) (i32.const 120) (local.get $k))
    (local.set $digits (i32.add (i32.const 131072) (i32.sub (local.get $k) (i32.const 8))))
    (block $refused
      (loop $write
        (local.set $d (i32.const 0))
        (loop $hex
          (i32.store8 (i32.add (local.get $digits) (local.get $d))
            (i32.load8_u (i32.and (i32.shr_u (local.get $n) (i32.sub (i32.const 28) (i32.shl (local.get $d) (i32.const 2))))
                                  (i32.const 15))))
          (local.set $d (i32.add (local.get $d) (i32.const 1)))
          (br_if $hex (i32.lt_u (local.get $d) (i32.const 8))))
        (call $set (i32.const 131072) (local.get $k) (i32.const 65536) (local.get $v) (i32.const 64))
        (br_if $refused (i32.load8_u (i32.const 64)))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $write)))
    ;; "N sets, then error T: MESSAGE"; the digits end at 1040
    (local.set $start (call $itoa (local.get $n) (i32.const 1040)))
    (memory.copy (i32.const 1040) (i32.const 32) (i32.const 18))
    (i32.store8 (i32.const 1058) (i32.add (i32.const 48) (i32.load8_u (i32.const 68))))
    (i32.store8 (i32.const 1059) (i32.const 58))
    (i32.store8 (i32.const 1060) (i32.const 32))
    (local.set $msg (i32.load (i32.const 72)))
    (local.set $msg_len (i32.load (i32.const 76)))
    (memory.copy (i32.const 1061) (local.get $msg) (local.get $msg_len))
    (i32.store8 (i32.const 96) (i32.const 0))
    (i32.store (i32.const 100) (local.get $start))
    (i32.store (i32.const 104) (i32.sub (i32.add (i32.const 1061) (local.get $msg_len)) (local.get $start)))
    (i32.const 96)))
