-- Callbacks and filters that fail, to test how errors are reported.
function OnStoredInstance(instanceId, tags, metadata, origin)
   error('cannot route ' .. tags['PatientID'])
end

function ReceivedInstanceFilter(dicom, origin, info)
   if dicom.PatientID == 'REFUSE' then
      local missing = nil
      return missing.field
   end
   return true
end
