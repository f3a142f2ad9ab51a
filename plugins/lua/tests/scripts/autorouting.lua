-- The Orthanc Book's auto-routing sample: forward every received instance.
function OnStoredInstance(instanceId, tags, metadata, origin)
   if origin['RequestOrigin'] ~= 'Lua' then
      SendToModality(instanceId, 'sample')
   end
end
