-- Fixing C-FIND requests, after the Orthanc Book: keys are "gggg,eeee", values strings.
function IncomingFindRequestFilter(query, origin)
   if origin['RemoteAet'] == 'BANNED' then
      error('no queries from ' .. origin['RemoteAet'])
   end
   query['0009,0010'] = nil  -- a private key a modality sends by mistake
   if query['0010,0020'] == 'typo' then
      query['0010,0020'] = 'P1'
   end
   return query
end

function IncomingWorklistRequestFilter(query, origin)
   if query['0010,0020'] == 'ERR' then
      return 42  -- not a table
   end
   query['0010,0010'] = 'WORK^' .. origin['RemoteAet']
   return query
end

function OutgoingFindRequestFilter(query, modality)
   if query['0010,0020'] == 'ERR' then
      error('cannot ask ' .. modality['AET'])
   end
   if query['0010,0020'] == '*' then
      query['0010,0020'] = 'P2'
   end
   return query
end
