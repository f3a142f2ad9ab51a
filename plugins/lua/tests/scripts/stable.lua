-- A study is complete once a "last image" of it arrives: no need to wait for StableAge.
stable = {}

function OnStoredInstance(instanceId, tags, metadata, origin)
   if tags['ImageComments'] == 'LAST' then
      local study = ParseJson(RestApiGet('/instances/' .. instanceId .. '/study'))
      SetStableStatus(study['ID'], true)
   end
end

function OnStableStudy(studyId, tags, metadata)
   table.insert(stable, tags['StudyInstanceUID'])
end
