;; Lists its KV namespace asking for 10,000 keys a page, keys that may be
;; 64 KiB each: the host bounds a page by bytes (1 MiB, or what the memory
;; limit leaves) and hands back a next-cursor. 20 pages of memory, mostly
;; free, to receive pages in.
;; Input "": one page; output "N keys, last page" or "N keys, more after the
;; next-cursor". Input "delete": every page, deleting each key listed;
;; output "deleted N keys".
;; world: chimera:agent/agent
(module
  (import "chimera:agent/kv@0.1.0" "list-keys" (func $list (param i32 i32 i32 i32 i32 i32 i32)))
  (import "chimera:agent/kv@0.1.0" "delete" (func $delete (param i32 i32 i32)))
  ;; 64: list-keys' return area; 128: delete's; 160: run's; 256: text;
  ;; 1024: the output; 196608: the heap for what the host hands over.
  (memory (export "memory") 20)
  (data (i32.const 256) " keys, last page")
  (data (i32.const 288) " keys, more after the next-cursor")
  (data (i32.const 352) "deleted ")
  (data (i32.const 368) " keys")
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
    (local $delete i32) (local $total i32) (local $keys i32) (local $n i32) (local $j i32)
    (local $more i32) (local $cursor i32) (local $cursor_len i32) (local $start i32) (local $end i32)
    (local.set $delete (i32.ne (local.get $len) (i32.const 0)))
    (block $done
      (loop $page
        (call $list (i32.const 0) (i32.const 0) (local.get $more) (local.get $cursor) (local.get $cursor_len)
                    (i32.const 10000) (i32.const 64))
        (if (i32.load8_u (i32.const 64)) (then (unreachable)))
        (local.set $keys (i32.load (i32.const 68)))
        (local.set $n (i32.load (i32.const 72)))
        (local.set $total (i32.add (local.get $total) (local.get $n)))
        (local.set $more (i32.load8_u (i32.const 76)))
        (local.set $cursor (i32.load (i32.const 80)))
        (local.set $cursor_len (i32.load (i32.const 84)))
        (br_if $done (i32.eqz (local.get $delete)))
        (local.set $j (i32.const 0))
        (block $deleted
          (loop $each
            (br_if $deleted (i32.ge_u (local.get $j) (local.get $n)))
            (call $delete (i32.load (i32.add (local.get $keys) (i32.shl (local.get $j) (i32.const 3))))
                          (i32.load (i32.add (local.get $keys) (i32.add (i32.shl (local.get $j) (i32.const 3)) (i32.const 4))))
                          (i32.const 128))
            (if (i32.load8_u (i32.const 128)) (then (unreachable)))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br $each)))
        (br_if $page (local.get $more))))
    (local.set $start (call $itoa (local.get $total) (i32.const 1040)))
    (if (local.get $delete)
      (then
        (local.set $start (i32.sub (local.get $start) (i32.const 8)))
        (memory.copy (local.get $start) (i32.const 352) (i32.const 8))
        (memory.copy (i32.const 1040) (i32.const 368) (i32.const 5))
        (local.set $end (i32.const 1045)))
      (else
        (if (local.get $more)
          (then
            (memory.copy (i32.const 1040) (i32.const 288) (i32.const 33))
            (local.set $end (i32.const 1073)))
          (else
            (memory.copy (i32.const 1040) (i32.const 256) (i32.const 16))
            (local.set $end (i32.const 1056))))))
    (i32.store8 (i32.const 160) (i32.const 0))
    (i32.store (i32.const 164) (local.get $start))
    (i32.store (i32.const 168) (i32.sub (local.get $end) (local.get $start)))
    (i32.const 160)))
