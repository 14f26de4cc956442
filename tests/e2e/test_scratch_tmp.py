from rawhttp import Client, get
def test_probe(condure, handler_factory):
    c = condure()
    h = handler_factory(c.base)
    with Client(c.port) as cl:
        cl.send(get("/x"))
        req = h.recv_request()
        print(h.last_raw)
        h.respond(req, 200, "OK", [("Content-Type", "text/plain")], "hello world\n")
        r = cl.read_response()
        print(r.raw)
    print(c.log_text())
