-- wrk script of hack/bench-proxy.sh: each request carries the next token of a file of
-- pre-minted tokens (one a line), round robin, so a verifier with a token cache smaller
-- than the file misses on every request.
--
--   wrk -s hack/bench/rotate-tokens.lua http://127.0.0.1:PORT/path -- tokens.txt
local requests = {}
local i = 0

function init(args)
  local path = wrk.path
  for line in io.lines(args[1]) do
    if line ~= "" then
      requests[#requests + 1] = wrk.format("GET", path, { ["Authorization"] = "Bearer " .. line })
    end
  end
  if #requests == 0 then
    error("no tokens in " .. tostring(args[1]))
  end
end

function request()
  i = i % #requests + 1
  return requests[i]
end
