-- Refresh-token rotation: every request spends a refresh token that was never used before. The queue starts
-- with the tokens of a file (minted through the real flow) and each 200 answer puts the rotated token back,
-- so every connection follows its own chain, as a client does (a token is never sent twice).
-- Arguments after `--`: PATH AUTHORIZATION TOKEN-FILE; prints one BENCH line of JSON at the end.
local queue, head, tail = {}, 1, 0
local path, auth
local reported = 0

function init(args)
  path, auth = args[1], args[2]
  for line in io.lines(args[3]) do
    if line ~= "" then
      tail = tail + 1
      queue[tail] = line
    end
  end
end

function request()
  local token = "exhausted" -- a lost chain (error answer): refused with 400, counted by wrk
  if head <= tail then
    token = queue[head]
    queue[head] = nil
    head = head + 1
  elseif reported < 3 then
    reported = reported + 1
    io.stderr:write("no unused refresh token left (chains ended by errors or closed connections)\n")
  end
  return wrk.format("POST", path, {["Authorization"] = auth,
                                   ["Content-Type"] = "application/x-www-form-urlencoded"},
                    "grant_type=refresh_token&refresh_token=" .. token)
end

function response(status, headers, body)
  if status ~= 200 and reported < 3 then
    -- The first few refusals, for the log: why a chain ended (run.py shows wrk's error output).
    reported = reported + 1
    io.stderr:write("refresh refused: " .. status .. " " .. body:sub(1, 200) .. "\n")
  end
  if status == 200 then
    local token = body:match('"refresh_token"%s*:%s*"([^"]+)"')
    if token then
      tail = tail + 1
      queue[tail] = token
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p99_us":%d}\n', summary.requests, summary.duration, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99)))
end
