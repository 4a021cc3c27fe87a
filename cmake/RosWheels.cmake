# Shared by lisa_ros's CMakeLists.txt and interfaces/tf2_msgs: building rosidl interface packages
# against the ROS 2 wheels in pip's isolated build environment (scikit-build-core). In a colcon
# workspace with a sourced ROS 2, both macros are no-ops in effect.

# Before find_package(ament_cmake):
macro(ros_wheels_find_prefix)
  # pip builds in an isolated environment whose prefix is unknown in advance: ask the interpreter
  # where ament_package lives and put that prefix first, so find_package() sees the wheel-based
  # ament/rosidl. In a colcon workspace this finds the sourced ROS 2 install, a no-op in effect.
  execute_process(
    COMMAND "${Python3_EXECUTABLE}" -c "import ament_package, os; print(os.path.dirname(ament_package.__file__))"
    OUTPUT_VARIABLE _ament_package_dir
    OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _ament_package_found)
  if(_ament_package_found EQUAL 0 AND _ament_package_dir)
    # <prefix>/lib/python3.X/site-packages/ament_package -> <prefix>
    get_filename_component(_ros_prefix "${_ament_package_dir}/../../../.." ABSOLUTE)
    list(PREPEND CMAKE_PREFIX_PATH "${_ros_prefix}")
    if(DEFINED ENV{AMENT_PREFIX_PATH})
      set(ENV{AMENT_PREFIX_PATH} "${_ros_prefix}:$ENV{AMENT_PREFIX_PATH}")
    else()
      set(ENV{AMENT_PREFIX_PATH} "${_ros_prefix}")
    endif()
    message(STATUS "${PROJECT_NAME}: ROS 2 prefix ${_ros_prefix}")
  endif()
endmacro()

# After rosidl_generate_interfaces():
macro(ros_wheels_fix_imported_includes)
  # The ROS 2 wheels export their *__rosidl_generator_py targets with the include directories of
  # the machine they were built on (/opt/python/cp311-...), and CMake refuses non-existent include
  # paths. Replace those entries with this interpreter's Python and NumPy headers.
  get_property(_imported_targets DIRECTORY PROPERTY IMPORTED_TARGETS)
  foreach(_target ${_imported_targets})
    get_target_property(_includes ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _includes)
      continue()
    endif()
    set(_kept "")
    set(_dropped FALSE)
    foreach(_dir ${_includes})
      if(IS_ABSOLUTE "${_dir}" AND NOT EXISTS "${_dir}" AND NOT _dir MATCHES "\\$<")
        set(_dropped TRUE)
      else()
        list(APPEND _kept "${_dir}")
      endif()
    endforeach()
    if(_dropped)
      list(APPEND _kept ${Python3_INCLUDE_DIRS} ${Python3_NumPy_INCLUDE_DIRS})
      list(REMOVE_DUPLICATES _kept)
      set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_kept}")
    endif()
  endforeach()
endmacro()

# After rosidl_generate_interfaces(), for this package's own Python type support target: with a
# build chain installed in a venv inside the source tree (`pip install --no-build-isolation` from
# a checkout with .venv-<distro>/ in it, as the Jazzy lane does), the Python and NumPy include
# directories the generator adds lie under the source directory, which CMake refuses to export.
# They are needed to build here only, so they are kept for the build and left out of the export.
macro(ros_wheels_fix_own_includes _target)
  if(TARGET ${_target})
    get_target_property(_own_includes ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(_own_includes)
      set(_wrapped "")
      foreach(_dir ${_own_includes})
        string(FIND "${_dir}" "${CMAKE_CURRENT_SOURCE_DIR}/" _in_source)
        if(_in_source EQUAL 0)
          list(APPEND _wrapped "$<BUILD_INTERFACE:${_dir}>")
        else()
          list(APPEND _wrapped "${_dir}")
        endif()
      endforeach()
      set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_wrapped}")
    endif()
  endif()
endmacro()
