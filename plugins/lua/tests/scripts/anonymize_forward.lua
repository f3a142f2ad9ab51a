-- The Orthanc Book's anonymize-then-forward sample: send an anonymized copy and delete
-- both the original and the copy from the local store.
function OnStoredInstance(instanceId, tags, metadata, origin)
   if origin['RequestOrigin'] ~= 'Lua' then
      local replace = {}
      replace['PatientName'] = 'Anonymous ' .. tags['PatientID']
      local body = DumpJson({ Replace = replace, Force = true, KeepPrivateTags = false })
      local anonymized = RestApiPost('/instances/' .. instanceId .. '/anonymize', body)
      local copy = ParseJson(RestApiPost('/instances', anonymized))['ID']
      SendToModality(copy, 'sample')
      Delete(instanceId)
   end
end
