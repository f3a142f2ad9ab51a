-- The Orthanc Book's "forward, then delete" in one line: here the deletion waits until
-- the store job has sent the instance.
function OnStoredInstance(instanceId, tags, metadata, origin)
   if tags['PatientID'] == 'TO-PEER' then
      Delete(SendToPeer(instanceId, 'second'))
   else
      Delete(SendToModality(instanceId, 'sample'))
   end
end
