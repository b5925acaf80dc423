-- wrk script: each connection writes DEPTH requests at once and waits for their replies
-- (HTTP/1.1 pipelining). Used by tools/bench_serve.py --pipeline DEPTH; by hand:
--   wrk -t1 -c16 -d5s -s tools/pipeline.lua http://127.0.0.1:PORT/1k.bin -- 16
local depth = 16
local req

init = function(args)
   depth = tonumber(args[1] or depth)
   local one = wrk.format(nil)
   req = string.rep(one, depth)
end

request = function()
   return req
end
