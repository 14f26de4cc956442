# a Flask application served through condure's WSGI gateway:
#   python -m condure --listen 8000 --zclient-stream ipc://client
#   python -m condure.wsgi --chdir examples flask_app:app --zclient-stream ipc://client
import time

from flask import Flask, Response, request

app = Flask(__name__)


@app.get('/')
def hello():
    return 'hello world\n', 200, {'Content-Type': 'text/plain'}


@app.post('/upload')
def upload():
    data = request.get_data()
    return {'bytes': len(data), 'first': data[:8].decode('latin-1')}


@app.get('/stream')
def stream():
    def parts():
        for i in range(1, 6):
            yield 'part %d of 5\n' % i
            time.sleep(0.2)  # monkey-patched by the gateway: yields to other requests
    return Response(parts(), mimetype='text/plain')
