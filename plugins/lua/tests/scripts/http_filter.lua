-- The Orthanc Book's sample: anyone may read, only "admin" may change anything.
function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
   if httpHeaders['x-break'] then
      error('cannot judge ' .. uri)
   end
   seen = method .. ' ' .. uri .. ' ' .. ip .. ' ' .. username
   if method == 'GET' then
      return true
   end
   return username == 'admin'
end
