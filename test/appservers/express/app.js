// A real Express 4 app for test/appservers: the routing Express does by default (paths are
// case-insensitive) and the method-override middleware reading X-HTTP-Method-Override and
// the _method query parameter, as apps commonly enable it. Every handler echoes what it saw as JSON. It listens on
// 127.0.0.1 on the port given as the first argument (0: any) and prints "listening <port>".
'use strict';
const express = require('express');
const methodOverride = require('method-override');

const app = express();
app.use(methodOverride('X-HTTP-Method-Override'));
app.use(methodOverride('_method'));

function echo(handler) {
  return (req, res) => res.json({
    handler,
    method: req.method,
    originalMethod: req.originalMethod,
    path: req.path,
    url: req.originalUrl,
    query: req.query,
    headers: req.headers,
  });
}

app.get('/admin/users', echo('admin-users'));
app.delete('/items/:id', echo('delete-item'));
app.all('*', echo('catch-all'));

const server = app.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  console.log('listening ' + server.address().port);
});
