# this handler streams every response in five parts, one second apart, over all three stream sockets
#
# Sockets (condure --zclient-stream ipc://client):
#   PULL   connect client-out         first packet of every request (any handler may get it)
#   ROUTER connect client-out-stream  later packets for our sessions; its identity must be our `from`
#   PUB    connect client-in          everything we send, prefixed with the condure instance id
#
# Rules followed: every packet we send carries `from`, `id` and our own `seq` (0, 1, 2, ...);
# request bodies flow only while we grant credits; response body bytes never exceed the
# credits condure has given us; a keep-alive goes out when a session has been quiet for a
# while, since condure drops a session after 60 s without a packet from its handler.
import os
import time

import tnetstring
import zmq
from zbase import endpoint


instance_id = 'streamhandler.{}'.format(os.getpid()).encode()

PARTS = 5
PART_INTERVAL = 1.0         # seconds between response parts
KEEP_ALIVE_INTERVAL = 30.0  # well inside condure's 60 s session timer
BODY_WINDOW = 16384         # request body bytes we let condure send ahead
SESSION_SILENCE = 120.0     # forget a session condure has not mentioned for this long


class Session:
    def __init__(self, req, now):
        self.id = req[b'id']
        self.addr = req[b'from']             # the condure instance to publish to
        self.seq = 0                         # seq of our next packet
        self.credits = req.get(b'credits', 0)  # response bytes we may still send
        self.reading_body = req.get(b'more', False)
        self.body_bytes = 0
        self.head_sent = False
        self.parts_made = 0
        self.pending = b''                   # response bytes waiting for credits
        self.next_part = None                # when the next part is due
        self.last_sent = now
        self.last_heard = now


sessions = {}

ctx = zmq.Context()
in_sock = ctx.socket(zmq.PULL)
in_sock.connect(endpoint('-out'))
in_stream_sock = ctx.socket(zmq.ROUTER)
in_stream_sock.setsockopt(zmq.IDENTITY, instance_id)
in_stream_sock.connect(endpoint('-out-stream'))
out_sock = ctx.socket(zmq.PUB)
out_sock.connect(endpoint('-in'))

# await subscription
time.sleep(0.1)


def send(s, fields, now):
    packet = {b'from': instance_id, b'id': s.id, b'seq': s.seq}
    packet.update(fields)
    s.seq += 1
    s.last_sent = now
    out_sock.send(s.addr + b' T' + tnetstring.dumps(packet))


def finish(s, why):
    sessions.pop(s.id, None)
    print('END {} {}'.format(s.id.decode(), why), flush=True)


def flush(s, now):
    # Send as much pending body as the credits allow. The head goes out with the
    # first packet even when no body fits; the last packet is the one without `more`.
    while True:
        n = min(s.credits, len(s.pending))
        last = s.parts_made == PARTS and n == len(s.pending)
        if n == 0 and s.head_sent and not last:
            return
        fields = {}
        if not s.head_sent:
            fields[b'code'] = 200
            fields[b'reason'] = b'OK'
            fields[b'headers'] = [[b'Content-Type', b'text/plain']]
            s.head_sent = True
        if n:
            fields[b'body'] = s.pending[:n]
        if not last:
            fields[b'more'] = True  # no Content-Length + more => chunked to the client
        send(s, fields, now)
        s.pending = s.pending[n:]
        s.credits -= n
        if last:
            finish(s, 'done')
            return


def start_response(s, now):
    s.next_part = now


def make_due_parts(now):
    for s in list(sessions.values()):
        if s.next_part is not None and s.next_part <= now:
            s.parts_made += 1
            s.pending += 'part {} of {}\n'.format(s.parts_made, PARTS).encode()
            s.next_part = now + PART_INTERVAL if s.parts_made < PARTS else None
            flush(s, now)


def send_keep_alives(now):
    for s in list(sessions.values()):
        if now - s.last_heard >= SESSION_SILENCE:
            finish(s, 'silent')
        elif now - s.last_sent >= KEEP_ALIVE_INTERVAL:
            send(s, {b'type': b'keep-alive'}, now)


def next_wakeup(now):
    times = [s.last_sent + KEEP_ALIVE_INTERVAL for s in sessions.values()]
    times += [s.next_part for s in sessions.values() if s.next_part is not None]
    if not times:
        return None  # nothing scheduled: wait for packets
    return max(0, int((min(times) - now) * 1000))


def handle_request(req, now):
    s = Session(req, now)
    print('IN {} {} {} {}'.format(s.addr.decode(), s.id.decode(),
                                  req.get(b'method', b'').decode(), req.get(b'uri', b'').decode()),
          flush=True)
    if req.get(b'uri', b'').startswith(b'ws'):
        # WebSocket upgrade: refuse it with an HTTP answer
        send(s, {b'type': b'error', b'condition': b'rejected', b'code': 400,
                 b'reason': b'Bad Request', b'headers': [[b'Content-Type', b'text/plain']],
                 b'body': b'this handler does not speak WebSocket\n'}, now)
        return
    sessions[s.id] = s
    if s.reading_body:
        # grant credits first and answer once the whole body has arrived, so the
        # connection can stay persistent
        send(s, {b'type': b'credit', b'credits': BODY_WINDOW}, now)
    else:
        start_response(s, now)


def handle_stream_packet(p, now):
    # condure may address several sessions in one packet (keep-alives, cancels)
    ids = p[b'id']
    if not isinstance(ids, list):
        ids = [{b'id': ids}]
    ptype = p.get(b'type')
    for entry in ids:
        s = sessions.get(entry[b'id'])
        if s is None:
            continue  # a session we already finished
        s.last_heard = now
        if ptype is None and s.reading_body:
            body = p.get(b'body', b'')
            s.body_bytes += len(body)
            if p.get(b'more', False):
                if body:
                    send(s, {b'type': b'credit', b'credits': len(body)}, now)
            else:
                s.reading_body = False
                print('BODY {} {} bytes'.format(s.id.decode(), s.body_bytes), flush=True)
                start_response(s, now)
        elif ptype == b'credit':
            s.credits += p.get(b'credits', 0)
            flush(s, now)
        elif ptype == b'keep-alive':
            pass
        elif ptype == b'cancel':
            finish(s, 'cancelled')
        else:
            print('IGNORED {} {}'.format(s.id.decode(), ptype), flush=True)


poller = zmq.Poller()
poller.register(in_sock, zmq.POLLIN)
poller.register(in_stream_sock, zmq.POLLIN)

while True:
    ready = dict(poller.poll(next_wakeup(time.monotonic())))
    now = time.monotonic()
    if in_sock in ready:
        m = in_sock.recv_multipart()
        if m[0][:1] == b'T':
            handle_request(tnetstring.loads(m[0][1:]), now)
    if in_stream_sock in ready:
        # [condure peer id, b'', b'T...']: the payload is the last frame
        m = in_stream_sock.recv_multipart()
        if m[-1][:1] == b'T':
            handle_stream_packet(tnetstring.loads(m[-1][1:]), now)
    make_due_parts(now)
    send_keep_alives(now)
