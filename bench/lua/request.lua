-- One fixed request per connection and round (wrk builds it once: no Lua per request).
-- Arguments after `--`: METHOD PATH [AUTHORIZATION [FORM-BODY]]; prints one BENCH line of JSON at the end.
function init(args)
  wrk.method = args[1]
  wrk.path = args[2]
  if args[3] and args[3] ~= "" then
    wrk.headers["Authorization"] = args[3]
  end
  if args[4] and args[4] ~= "" then
    wrk.body = args[4]
    wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p99_us":%d}\n', summary.requests, summary.duration, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99)))
end
